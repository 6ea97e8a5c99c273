"""The whole DVC pipeline, end to end, on a tiny corpus and tiny configs (dvc repro for real)."""

import importlib.util
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
               "nfe_budgets": [4, 8], "num_samples": 6, "length": 16, "batch_size": 4, "device": "cpu",
               "tuning": {"num_samples": 4, "max_pilots": 3, "selections": [{"rule": "topk"}]}},
    "evaluate_samples": {"bootstrap_resamples": 100},
    "ablation": {"arms": {"mlp_head": {"model": {"critic_head": "mlp"}}},
                 "steps": 4, "eval_windows": 4, "rollout_steps": 3, "nfe": 8, "num_samples": 4},
    "study": {"sample": {"policies": {"confidence": {},
                                      "oracle_loo": {"num_samples": 4, "tuning_samples": 2, "nfe_budgets": [8]}},
                         "nfe_budgets": [8], "tuning": {"num_samples": 4, "max_pilots": 3, "selections": [
                             {"rule": "topk"}]}},
              # one variant (each costs three stages); the critic targets' training is tested in test_targets.py
              "variants": {"self_correct": {"overrides": {"train": {"self_correct": 0.1, "alpha": 0.0}},
                                            "policies": {"self_planning_budget": {"policy": "self_planning",
                                                                                  "committed_budget": 0.1}}}}},
    "notebooks": {"num_examples": 2, "steps": 4, "nfe": 8, "passage_length": 40, "cell_timeout": 300},
}
NOTEBOOKS = {
    "01_masked_diffusion_and_the_heuristic": {"schedule", "trajectory_confidence", "confidence_of_errors"},
    "02_training_the_critic": {"generator_loss", "critic_training"},
    "03_critic_as_error_detector": {"roc_and_pr", "reliability_and_mask_ratio", "one_step_vs_rollouts",
                                    "what_the_label_allows", "refreshed_target"},
    "04_policy_comparison": {"frontier", "trajectories"},
}


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "remask tests", "GIT_AUTHOR_EMAIL": "tests@remask.invalid",
                "GIT_COMMITTER_NAME": "remask tests", "GIT_COMMITTER_EMAIL": "tests@remask.invalid"}


def dvc(project: Path, *args: str, tool: str = "dvc") -> subprocess.CompletedProcess:
    env = {**os.environ, **GIT_IDENTITY, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(project), "DVC_NO_ANALYTICS": "1"}
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
    assert all(len({r["temperature"] for r in rows if r["nfe_budget"] == b}) == 2 for b in (4, 8))
    assert {r["seed"] for r in rows} == {0} and all(len(r["text"]) == 16 for r in rows)
    log = json.loads((p / "results/tuning/critic.json").read_text())
    assert log["tuning_seed"] == 1 != log["report_seed"] == 0
    assert set(log["budgets"]) == {"4", "8"} and all(b["pilots"] for b in log["budgets"].values())
    # the checkpoint records what the critic was trained on, which the sample stage checked
    assert json.loads((p / "models/multitask/config.json").read_text())["critic"]["input"] == "partial"
    metrics = json.loads((p / "results/evaluate_samples/metrics.json").read_text())
    assert set(metrics["frontier"]) == {f"{q}/nfe{b}" for q in ("random", "confidence", "critic", "critic_fused")
                                        for b in (4, 8)}
    assert {(c["policy"], c["baseline"]) for c in metrics["comparisons"] if c["budget"] == 8} >= {
        ("critic", "confidence"), ("critic_fused", "confidence"), ("random", "confidence")}
    summary = (p / "results/summary.md").read_text()
    for heading in ("## Verdict", "### NFE 8", "## Each policy at its tuned settings", "## Detection against a refreshed",
                    "## The seed's view"):
        assert heading in summary, heading
    refreshed = json.loads((p / "results/evaluate_critic/metrics.json").read_text())["refreshed"]
    assert set(refreshed["pooled"]) == {"confidence", "critic", "critic_fused", "oracle_loo"}
    assert "## Ablation" not in summary  # the ablation belongs to the study tier
    assert not (p / "models/ablation").exists() and not (p / "results/study").exists()


@pytest.fixture(scope="module")
def study_run(pipeline_run):
    """The opt-in study tier on top of the quick tier's artifacts."""
    if importlib.util.find_spec("x_transformers") is None:
        pytest.skip("the study tier trains the public peer, which needs the optional dependency "
                    "x-transformers==2.31.10: pip install -e '.[peer]'")
    result = dvc(pipeline_run, "repro", "study/dvc.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return pipeline_run


def test_study_tier_adds_the_ablation_and_the_full_frontier(study_run):
    p = study_run
    arms = {}
    for arm in ("mlp_head",):
        arms[arm] = json.loads((p / "results/ablation" / arm / "metrics.json").read_text())
        assert set(arms[arm]["frontier"]) == {"confidence", "critic", "critic_fused"}
        assert set(arms[arm]["differences"]) == {"critic", "critic_fused"}
        assert {"critic", "critic_fused", "confidence"} <= set(arms[arm]["rollout_auroc"])
        assert all(t["pilots"] for t in arms[arm]["tuned"].values())
        # every arm trained the same number of extra steps from the multitask weights; its validation
        # loss comes from its own training curves
        info = json.loads((p / "models/ablation" / arm / "config.json").read_text())
        assert info["step"] == 4 and info["variant"] == f"ablation_{arm}"
        curves = json.loads((p / "results/ablation" / arm / "train" / "metrics.json").read_text())
        assert arms[arm]["val"] == curves["val"]
    assert arms["mlp_head"]["overrides"] == {"model": {"critic_head": "mlp"}}
    rows = [json.loads(line) for line in (p / "results/study/samples/confidence.jsonl").open()]
    assert {r["nfe_budget"] for r in rows} == {8} and len({r["temperature"] for r in rows}) == 2
    oracle = [json.loads(line) for line in (p / "results/study/samples/oracle_loo.jsonl").open()]
    assert {(r["steps"], r["nfe"]) for r in oracle} == {(8, 8 + 7 * 16)} and len(oracle) == 2 * 4  # equal steps
    # a variant: trained from scratch like multitask, sampled on its own model, scored on the same states
    info = json.loads((p / "models/study/self_correct/config.json").read_text())
    assert info["step"] == 8 and info["variant"] == "study/self_correct" and info["self_correct"] == 0.1
    drawn = [json.loads(line) for line in (p / "results/study/variants/self_correct/samples.jsonl").open()]
    assert {(r["policy"], r["runs"], r["committed_budget"]) for r in drawn} == {
        ("self_planning_budget@self_correct", "self_planning", 0.1)}
    assert set(json.loads((p / "results/study/variants/self_correct/refreshed.json").read_text())["pooled"]) == {
        "self_planning@self_correct"}
    summary = (p / "results/study/summary.md").read_text()
    assert "`study_evaluate_samples` stage of `make study`" in summary
    assert "| 8 | `self_planning_budget@self_correct` | learned |" in summary
    assert "| pooled | `self_planning@self_correct` |" in summary
    assert "the `self_correct` generator's validation loss within 1% of generator-only" in summary
    assert "## Ablation: one critic lever at a time" in summary
    assert "| mlp_head | model.critic_head=mlp |" in summary
    assert "`oracle_loo` (oracle ceiling at equal steps" in summary  # the ceiling is labelled as such
    # the public peer: trained with its own code on our steps, sampled with its own generate() at 2 passes a step
    peer = json.loads((p / "results/study/train/peer/metrics.json").read_text())
    assert peer["step"] == 8 and peer["val"]["gen_loss"] > 0
    assert json.loads((p / "models/study/peer/config.json").read_text())["package"] == "x-transformers==2.31.10"
    drawn = [json.loads(line) for line in (p / "results/study/samples/peer_x_transformers.jsonl").open()]
    assert {(r["steps"], r["nfe"], r["kind"]) for r in drawn} == {(4, 8, "peer")} and len(drawn) == 2 * 6
    assert "| 8 | `peer_x_transformers` | peer (public implementation) |" in summary
    assert "## The public peer: x-transformers' self-critic" in summary
    assert "oracle_loo`" not in (p / "results/summary.md").read_text().split("## Detection against")[0]
    executed = nbformat.read(p / "reports/study/04_policy_comparison.ipynb", as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'summary_path = "results/study/summary.md"' in injected.source
    assert (p / "reports/study/figures/04_policy_comparison/frontier.png").is_file()


def test_exp_run_then_exp_show_and_metrics_diff_compare_runs(study_run, tmp_path):
    """What the README promises: `dvc exp run -S` + `dvc exp show` list both runs' metrics, and
    `dvc metrics diff` compares the workspace with HEAD (metrics are committed, not git-ignored)."""
    project = tmp_path / "exp"
    shutil.copytree(study_run, project, symlinks=True)
    assert git(project, "add", "-A").returncode == 0
    tracked = git(project, "ls-files").stdout.splitlines()
    assert "results/evaluate_samples/metrics.json" in tracked and "results/summary.md" in tracked
    cached = [f for f in tracked if f.startswith(("models/", "results/samples/", "data/")) and not f.endswith(".gitignore")]
    assert cached == ["data/prepared/stats.json"], cached  # DVC git-ignores what it caches
    assert git(project, "commit", "-q", "-m", "baseline").returncode == 0
    run = dvc(project, "exp", "run", "-S", "evaluate_critic.seed=1", "evaluate_critic")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    shown = dvc(project, "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    seeds, aurocs = set(), set()
    for commit in json.loads(shown.stdout):
        for exp in [commit, *[e for r in commit.get("experiments") or [] for e in r.get("revs", [])]]:
            data = exp.get("data") or {}
            params = data.get("params", {}).get("params.yaml", {}).get("data", {})
            metrics = data.get("metrics", {}).get("results/evaluate_critic/metrics.json", {}).get("data", {})
            if params and metrics:
                seeds.add(params["evaluate_critic"]["seed"])
                aurocs.add(metrics["one_step"]["pooled"]["critic"]["auroc"])
    assert seeds == {0, 1} and len(aurocs) == 2, shown.stdout[:3000]
    diff = dvc(project, "metrics", "diff", "--json")
    assert diff.returncode == 0, diff.stderr
    changed = json.loads(diff.stdout)["results/evaluate_critic/metrics.json"]
    assert changed["one_step.pooled.critic.auroc"]["diff"] != 0


def test_dvc_metrics_and_plots_are_declared(pipeline_run):
    shown = dvc(pipeline_run, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "results/evaluate_samples/metrics.json" in shown.stdout and "data/prepared/stats.json" in shown.stdout
    plots = dvc(pipeline_run, "plots", "show", "--json")
    assert plots.returncode == 0, plots.stderr
    assert "results/evaluate_samples/plots/frontier/critic_nfe8.csv" in plots.stdout


def test_second_repro_changes_nothing(pipeline_run):
    status = dvc(pipeline_run, "status")
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


def test_a_failing_cell_fails_the_notebook_stage(pipeline_run, tmp_path):
    """A broken artifact makes papermill stop; the stage exits non-zero, naming the cell, and leaves no figures."""
    project = tmp_path / "broken"
    shutil.copytree(pipeline_run, project, ignore=shutil.ignore_patterns(".dvc"))
    (project / "results/evaluate_samples/metrics.json").write_text("{}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(project)}
    run = subprocess.run([sys.executable, "-m", "pipeline.notebook", "--name", "04_policy_comparison"], cwd=project,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert "notebook 04_policy_comparison: cell" in run.stderr and "KeyError" in run.stderr
    assert not (project / "reports/figures/04_policy_comparison").exists()
    assert (project / "reports/04_policy_comparison.failed.ipynb").is_file()
    # the previous complete notebook is still there, untouched
    assert nbformat.read(project / "reports/04_policy_comparison.ipynb", as_version=4).cells
