"""The opt-in study tier's DVC pipeline, end to end on the tiny configs of tests/test_pipeline.py:
ablation arms, the full frontier with the oracle, a study variant, the public peer, and `dvc exp`.

In the slow tier (``make test-slow``; CI runs it after ``make test``): it runs the quick tier again
under the study, about two minutes of a 2-core CPU.
"""

import importlib.util
import json
import shutil

import nbformat
import pytest

from test_pipeline import dvc, git, make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """The opt-in study tier on top of the quick tier's artifacts."""
    if importlib.util.find_spec("x_transformers") is None:
        pytest.skip("the study tier trains the public peer, which needs the optional dependency "
                    "x-transformers==2.31.10: pip install -e '.[peer]'")
    project = make_project(tmp_path_factory.mktemp("study"))
    for target in ([], ["study/dvc.yaml"]):
        result = dvc(project, "repro", *target)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return project


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
    # the study compares at the text's entropy and at its second level, each with its own two report temperatures
    assert {r["nfe_budget"] for r in rows} == {8} and {r["level"] for r in rows} == {"text", "second"}
    assert all(len({r["temperature"] for r in rows if r["level"] == level}) == 2 for level in ("text", "second"))
    oracle = [json.loads(line) for line in (p / "results/study/samples/oracle_loo.jsonl").open()]
    assert {(r["steps"], r["nfe"]) for r in oracle} == {(8, 8 + 7 * 16)} and len(oracle) == 2 * 2 * 4  # equal steps
    # a variant: trained from scratch like multitask, sampled on its own model, scored on the same states
    info = json.loads((p / "models/study/self_correct/config.json").read_text())
    assert info["step"] == 8 and info["variant"] == "study/self_correct" and info["self_correct"] == 0.1
    drawn = [json.loads(line) for line in (p / "results/study/variants/self_correct/samples.jsonl").open()]
    assert {(r["policy"], r["runs"], r["committed_budget"]) for r in drawn} == {
        ("confidence@self_correct", "confidence", None), ("remdm_conf_budget@self_correct", "remdm_conf", 0.1),
        ("self_planning_budget@self_correct", "self_planning", 0.1)}  # with its own model's two baselines
    assert set(json.loads((p / "results/study/variants/self_correct/refreshed.json").read_text())["pooled"]) == {
        "self_planning@self_correct"}
    summary = (p / "results/study/summary.md").read_text()
    assert "`study_evaluate_samples` stage of `make study`" in summary
    assert "| 8 | text | `self_planning_budget@self_correct` | learned |" in summary
    assert "| 8 | second | `self_planning_budget@self_correct` | learned |" in summary
    for baseline in ("confidence@self_correct", "remdm_conf_budget@self_correct"):  # the score apart from the model
        assert f"- `self_planning_budget@self_correct` vs `{baseline}`: " in summary
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
    assert {(r["steps"], r["nfe"], r["kind"]) for r in drawn} == {(4, 8, "peer")} and len(drawn) == 2 * 2 * 6
    assert "| 8 | second | `peer_x_transformers` | peer (public implementation) |" in summary
    assert "### NFE 8, at the second level (" in summary
    assert "## The public peer: x-transformers' self-critic" in summary
    # our sampler on the peer's generator: its model apart from its sampler
    ours = [json.loads(line) for line in (p / "results/study/variants/peer/samples.jsonl").open()]
    assert {r["policy"] for r in ours} == {"confidence@peer"} and {r["level"] for r in ours} == {"text", "second"}
    assert "- `peer_x_transformers` vs `confidence@peer`: " in summary
    assert "- `confidence@peer` vs `confidence`: " in summary
    assert "its generator under our sampler vs ours (`confidence@peer` vs `confidence`)" in summary
    assert "oracle_loo`" not in (p / "results/summary.md").read_text().split("## Detection against")[0]
    executed = nbformat.read(p / "reports/study/04_policy_comparison.ipynb", as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'summary_path = "results/study/summary.md"' in injected.source
    # the finalists, drawn again on 9 texts: the first 6 are their report samples, the rest new
    finalists = json.loads((p / "results/study/finalists/finalists.json").read_text())
    assert finalists["texts"]["confidence"] == 9 and "confidence" in finalists["rows"]["8"]["text"]
    assert "oracle_loo" in finalists["rows"]["8"]["text"] and "oracle_loo" not in finalists["texts"]  # its own 4
    assert "peer_x_transformers" in finalists["rows"]["8"]["second"]
    again = [json.loads(line) for line in (p / "results/study/finalists/samples.jsonl").open()]
    for level in ("text", "second"):
        for temperature in {r["temperature"] for r in rows if r["level"] == level}:
            first = [r for r in rows if r["level"] == level and r["temperature"] == temperature]
            more = [r for r in again if r["policy"] == "confidence" and r["level"] == level
                    and r["temperature"] == temperature]
            assert len(more) == 9 and more[:6] == first  # the seed's stream spent in the same order
    assert "`confidence` 9" in summary and "`oracle_loo` its report draw" in summary
    for figure in ("frontier", "verdict", "verdict_variants"):  # the variants' own panel, against their own models
        assert (p / f"reports/study/figures/04_policy_comparison/{figure}.png").is_file(), figure


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


def test_after_the_study_both_tiers_are_up_to_date(study_run):
    # the scale axis (scale/dvc.yaml) is a pipeline of its own, not run here: tests/test_pipeline_scale.py
    status = dvc(study_run, "status", "dvc.yaml", "study/dvc.yaml")
    assert status.returncode == 0
    assert "up to date" in status.stdout, status.stdout
