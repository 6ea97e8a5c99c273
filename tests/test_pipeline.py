"""The quick tier's DVC pipeline, end to end, on a tiny corpus and tiny configs (dvc repro for real).

The study tier on top of it is tests/test_pipeline_study.py, in the slow tier (``make test-slow``)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import TINY_MODEL, TINY_OPTIM, make_documents, write_params

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "model": TINY_MODEL,
    "train": dict(TINY_OPTIM, max_steps=8, alpha=0.5, alpha_warmup_steps=2),
    "judge": {"model": dict(TINY_MODEL, block_size=24), "train": dict(TINY_OPTIM, max_steps=8)},
    "evaluate_critic": {"num_windows": 12, "mask_ratios": [0.3, 0.7], "rollout_windows": 4, "rollout_steps": 3,
                        "refreshed_samples": 1, "refreshed_steps": 4},
    "sample": {"policies": {"random": {}, "confidence": {}, "critic": {}, "critic_fused": {}},
               "nfe_budgets": [4, 8], "num_samples": 6, "length": 16, "batch_size": 3, "device": "cpu",
               # the default grid compares at the text's entropy only, with no pool search (its time budget);
               # both are tested here
               "tuning": {"num_samples": 4, "max_pilots": 3, "selections": [{"rule": "topk"}], "second_level": 0.875,
                          "committed_budgets": [0.0]}},
    "evaluate_samples": {"bootstrap_resamples": 100},
    "ablation": {"arms": {"mlp_head": {"model": {"critic_head": "mlp"}}},
                 "steps": 4, "eval_windows": 4, "rollout_steps": 3, "nfe": 8, "num_samples": 4},
    "study": {"finalists": {"num_samples": 9, "oracle_num_samples": 4}, "detection_samples": 2, "detection_positions": 8,
              "sample": {"policies": {"confidence": {},
                                      "oracle_loo": {"num_samples": 4, "tuning_samples": 2, "nfe_budgets": [8]}},
                         "nfe_budgets": [8], "tuning": {"num_samples": 4, "max_pilots": 3, "selections": [
                             {"rule": "topk"}]}},
              # one variant (each costs three stages); the critic targets' training is tested in test_targets.py
              "variants": {"self_correct": {"frozen_generator": None,
                                            "overrides": {"train": {"self_correct": 0.1, "alpha": 0.0}},
                                            "policies": {"confidence": {},
                                                         "remdm_conf_budget": {"policy": "remdm_conf",
                                                                               "committed_budget": 0.1},
                                                         "self_planning_budget": {"policy": "self_planning",
                                                                                  "committed_budget": 0.1}}}}},
    # the scale axis at tiny points (their names are scale/dvc.yaml's), tested in tests/test_pipeline_scale.py
    "scale": {"points": {"steps500": {"train": {"max_steps": 4, "eval_every": 4, "checkpoint_every": 4}}, "steps1500": {},
                         "steps4500": {"train": {"max_steps": 12, "eval_every": 6, "checkpoint_every": 6}}},
              "models": {"generator_only": {"frozen_generator": None, "overrides": {"train": {"alpha": 0.0}},
                                            "policies": {"confidence": {},
                                                         "remdm_conf_budget": {"policy": "remdm_conf",
                                                                               "committed_budget": 0.1}}},
                         "multitask": {"frozen_generator": None, "overrides": {},
                                       "policies": {"confidence": {},
                                                    "remdm_conf_budget": {"policy": "remdm_conf", "committed_budget": 0.1},
                                                    "critic_fused": {}}},
                         "posthoc": {"frozen_generator": "generator_only",
                                     "overrides": {"train": {"max_steps": 4, "warmup_steps": 1, "alpha": 1.0,
                                                             "alpha_warmup_steps": 0, "eval_every": 4,
                                                             "checkpoint_every": 4},
                                                   "critic": {"target": "generated", "label_scope": "all",
                                                              "rollout_share": 0.5, "row_share": 1.0}},
                                     "policies": {"confidence": {},
                                                  "remdm_conf_budget": {"policy": "remdm_conf", "committed_budget": 0.1},
                                                  "critic_fused": {}}}},
              "ceiling": {"model": "generator_only", "policies": {"oracle_loo": {"num_samples": 4, "tuning_samples": 2}}},
              "judge": {"train": {"max_steps": 12}}, "nfe_budgets": [8], "num_samples": 6},
    "notebooks": {"num_examples": 2, "steps": 4, "nfe": 8, "passage_length": 40, "cell_timeout": 300},
}
NOTEBOOKS = {
    "01_masked_diffusion_and_the_heuristic": {"schedule", "trajectory_confidence", "confidence_of_errors"},
    "02_training_the_critic": {"generator_loss", "critic_training"},
    "03_critic_as_error_detector": {"roc_and_pr", "reliability_and_mask_ratio", "one_step_vs_rollouts",
                                    "what_the_label_allows", "refreshed_target"},
    "04_policy_comparison": {"frontier", "trajectories", "verdict", "search"},
}


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "remask tests", "GIT_AUTHOR_EMAIL": "tests@remask.invalid",
                "GIT_COMMITTER_NAME": "remask tests", "GIT_COMMITTER_EMAIL": "tests@remask.invalid"}


def project_env(project: Path) -> dict[str, str]:
    """The environment a command runs in inside a project: its own copy of pipeline/ and src/ imported."""
    return {**os.environ, "PYTHONPATH": f"{project}{os.pathsep}{project / 'src'}"}


def dvc(project: Path, *args: str, tool: str = "dvc") -> subprocess.CompletedProcess:
    env = {**project_env(project), **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [str(Path(sys.executable).parent / "dvc")] if tool == "dvc" else [tool]
    return subprocess.run([*command, *args], cwd=project, env=env, capture_output=True, text=True, timeout=900)


def git(project: Path, *args: str) -> subprocess.CompletedProcess:
    return dvc(project, *args, tool="git")


def make_project(root: Path) -> Path:
    project = root / "project"
    project.mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    (project / "study").mkdir()
    shutil.copy(REPO / "study" / "dvc.yaml", project / "study" / "dvc.yaml")
    (project / "scale").mkdir()
    shutil.copy(REPO / "scale" / "dvc.yaml", project / "scale" / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", project / ".gitignore")
    shutil.copytree(REPO / "pipeline", project / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if (REPO / "notebooks").is_dir():
        shutil.copytree(REPO / "notebooks", project / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    corpus = root / "corpus"
    corpus.mkdir()
    for doc in make_documents(8):
        (corpus / doc.name).write_text(doc.text)
    params = {"data": {"source": str(corpus), "val_fraction": 0.15, "test_fraction": 0.15}, **TINY}
    # DVC needs every section a stage names to be present: write the full, validated params
    write_params(project / "params.yaml", params)
    assert git(project, "init", "-q").returncode == 0
    assert dvc(project, "init", "-q").returncode == 0
    # a user's repository has history (DVCLive refuses an empty one)
    assert git(project, "add", "-A").returncode == 0 and git(project, "commit", "-qm", "code").returncode == 0
    return project


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("pipeline"))
    result = dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return project


def test_every_stage_produces_its_outputs(pipeline_run):
    p = pipeline_run
    for path in ["data/prepared/stats.json", "models/multitask/model.safetensors", "models/generator_only/config.json",
                 "models/judge/model.safetensors", "results/evaluate_critic/metrics.json",
                 "results/samples/critic.jsonl", "results/samples/judge.jsonl",
                 "results/evaluate_samples/metrics.json", "results/summary.md"]:
        assert (p / path).is_file(), path
    rows = [json.loads(line) for line in (p / "results/samples/critic.jsonl").read_text().splitlines()]
    # every NFE budget, the critic's steps fitting it, two report temperatures, on the report seed only
    assert {(r["nfe_budget"], r["steps"], r["nfe"]) for r in rows} == {(4, 2, 3), (8, 4, 7)}
    assert all(len({r["temperature"] for r in rows if r["nfe_budget"] == b and r["level"] == level}) == 2
               for b in (4, 8) for level in ("text", "second"))
    assert {r["seed"] for r in rows} == {0} and all(len(r["text"]) == 16 for r in rows)
    log = json.loads((p / "results/tuning/critic.json").read_text())
    assert log["tuning_seed"] == 1 != log["report_seed"] == 0
    assert set(log["budgets"]) == {"4", "8"} and all(b["levels"]["text"]["pilots"] for b in log["budgets"].values())
    assert {b["levels"]["second"]["target_entropy"] for b in log["budgets"].values()} == {0.875 * log["target_entropy"]}
    # the checkpoint records what the critic was trained on, which the sample stage checked
    assert json.loads((p / "models/multitask/config.json").read_text())["critic"]["input"] == "partial"
    metrics = json.loads((p / "results/evaluate_samples/metrics.json").read_text())
    assert set(metrics["frontier"]) == {f"{q}/nfe{b}/{level}" for q in ("random", "confidence", "critic", "critic_fused")
                                        for b in (4, 8) for level in ("text", "second")}
    assert {(c["policy"], c["baseline"]) for c in metrics["comparisons"] if c["budget"] == 8} >= {
        ("critic", "confidence"), ("critic_fused", "confidence"), ("random", "confidence")}
    summary = (p / "results/summary.md").read_text()
    for heading in ("## Verdict", "### NFE 8, at the test text's entropy", "### NFE 8, at the second level",
                    "## Each policy at its tuned settings", "## Detection against a refreshed",
                    "## The seed's view"):
        assert heading in summary, heading
    refreshed = json.loads((p / "results/evaluate_critic/metrics.json").read_text())["refreshed"]
    assert set(refreshed["pooled"]) == {"confidence", "critic", "critic_fused", "oracle_loo"}
    assert "## Ablation" not in summary  # the ablation belongs to the study tier
    assert not (p / "models/ablation").exists() and not (p / "results/study").exists()


def test_dvc_metrics_and_plots_are_declared(pipeline_run):
    shown = dvc(pipeline_run, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "results/evaluate_samples/metrics.json" in shown.stdout and "data/prepared/stats.json" in shown.stdout
    plots = dvc(pipeline_run, "plots", "show", "--json")
    assert plots.returncode == 0, plots.stderr
    assert "results/evaluate_samples/plots/frontier/critic_nfe8.csv" in plots.stdout


def test_second_repro_changes_nothing(pipeline_run):
    status = dvc(pipeline_run, "status", "dvc.yaml")  # the quick tier (the study's: tests/test_pipeline_study.py)
    assert status.returncode == 0
    assert "up to date" in status.stdout, status.stdout


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebooks_are_executed_with_their_figures(pipeline_run, name):
    """papermill ran every notebook to the end on the tiny artifacts, with params.yaml's values."""
    executed = nbformat.read(pipeline_run / "reports" / f"{name}.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "seed = 0" in injected.source and "project_dir = \".\"" in injected.source
    assert "<html" in (pipeline_run / "reports" / f"{name}.html").read_text()[:500].lower()
    figures = {p.stem for p in (pipeline_run / "reports" / "figures" / name).glob("*.png")}
    assert figures == NOTEBOOKS[name]
    assert all(p.stat().st_size > 1000 for p in (pipeline_run / "reports" / "figures" / name).glob("*.png"))


def test_notebook_04_uses_the_notebooks_nfe(pipeline_run):
    executed = nbformat.read(pipeline_run / "reports" / "04_policy_comparison.ipynb", as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "nfe = 8" in injected.source and "length = 16" in injected.source


def notebook_stage(project: Path, name: str) -> subprocess.CompletedProcess:
    """The notebook stage of ``name`` run inside ``project`` (its kernel found on the environment's PATH)."""
    env = {**project_env(project), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "pipeline.notebook", "--name", name], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_notebook_run_again_on_the_same_results_writes_the_same_report(pipeline_run, tmp_path):
    """No clock time, temporary path or random cell id in a report: the same results give the
    same notebook and HTML, byte for byte (and dvc.lock the same hashes)."""
    project = tmp_path / "again"
    shutil.copytree(pipeline_run, project, ignore=shutil.ignore_patterns(".dvc", ".git"))
    name = "02_training_the_critic"
    run = notebook_stage(project, name)
    assert run.returncode == 0, run.stderr[-2000:]
    for suffix in (".ipynb", ".html"):
        assert (project / "reports" / f"{name}{suffix}").read_bytes() == \
            (pipeline_run / "reports" / f"{name}{suffix}").read_bytes(), suffix
    text = (project / "reports" / f"{name}.ipynb").read_text()
    assert "start_time" not in text and "iopub" not in text and ".tmp" not in text


def test_a_failing_cell_fails_the_notebook_stage(pipeline_run, tmp_path):
    """A broken artifact makes papermill stop; the stage exits non-zero, naming the cell, and leaves no figures."""
    project = tmp_path / "broken"
    shutil.copytree(pipeline_run, project, ignore=shutil.ignore_patterns(".dvc"))
    (project / "results/evaluate_samples/metrics.json").write_text("{}")
    run = notebook_stage(project, "04_policy_comparison")
    assert run.returncode != 0
    assert "notebook 04_policy_comparison: cell" in run.stderr and "KeyError" in run.stderr
    assert not (project / "reports/figures/04_policy_comparison").exists()
    assert (project / "reports/04_policy_comparison.failed.ipynb").is_file()
    # the previous complete notebook is still there, untouched
    assert nbformat.read(project / "reports/04_policy_comparison.ipynb", as_version=4).cells
