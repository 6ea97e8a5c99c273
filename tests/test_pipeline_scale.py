"""The opt-in scale axis's DVC pipeline (``make scale``), end to end on the tiny configs of
tests/test_pipeline.py: three compute points (4, 8 and 12 steps) with their generator, joint critic
and post-hoc critic, the axis's own judge, and the summary's verdict per point and family.

In the slow tier (``make test-slow``): about five minutes of a 2-core CPU.
"""

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO, TINY_MODEL
from test_pipeline import TINY, dvc, make_project, project_env
from remask.checkpoint import read_weights

pytestmark = pytest.mark.slow
POINTS = {"steps500": 4, "steps1500": 8, "steps4500": 12}


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("scale"))
    result = dvc(project, "repro", "scale/dvc.yaml")  # the quick tier's tokenize stage runs first, nothing else of it
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return project


def test_every_point_trains_its_models_each_with_its_own_schedule(scale_run):
    p = scale_run
    assert not (p / "models/multitask").exists()  # the axis trains its own models only
    for point, steps in POINTS.items():
        for model in ("generator_only", "multitask"):
            info = json.loads((p / f"models/scale/{point}/{model}/config.json").read_text())
            assert info["step"] == steps and info["variant"] == f"scale/{point}/{model}"
        assert json.loads((p / f"models/scale/{point}/generator_only/config.json").read_text())["alpha"] == 0.0
    judge = json.loads((p / "models/scale/judge/config.json").read_text())
    assert judge["step"] == max(POINTS.values()) and judge["model"]["causal"]  # as long as the longest generator


def test_the_post_hoc_critic_leaves_each_points_generator_as_it_was(scale_run):
    p = scale_run
    for point in POINTS:
        frozen = read_weights(p / f"models/scale/{point}/generator_only/model.safetensors")
        posthoc = read_weights(p / f"models/scale/{point}/posthoc/model.safetensors")
        assert all(torch.equal(t, frozen[k]) for k, t in posthoc.items() if not k.startswith("critic_"))
        info = json.loads((p / f"models/scale/{point}/posthoc/config.json").read_text())
        assert info["frozen_generator"] == f"models/scale/{point}/generator_only" and info["step"] == 4
        val = {m: json.loads((p / f"results/scale/train/{point}/{m}/metrics.json").read_text())["val"]["gen_loss"]
               for m in ("generator_only", "posthoc")}
        assert val["posthoc"] == val["generator_only"]


def test_the_summary_gives_a_verdict_per_point_and_family_against_its_own_model(scale_run):
    p = scale_run
    rows = [json.loads(line) for line in (p / "results/scale/samples/steps1500/posthoc/samples.jsonl").open()]
    assert {r["policy"] for r in rows} == {f"{row}@posthoc-steps1500" for row in
                                           ("confidence", "remdm_conf_budget", "critic_fused")}
    for point in POINTS:  # the ceiling's rows are drawn in a stage of their own, on its model
        drawn = {folder: {json.loads(line)["policy"] for line in (p / f"results/scale/samples/{point}/{folder}/samples.jsonl").open()}
                 for folder in ("generator_only", "ceiling")}
        assert drawn == {"generator_only": {f"confidence@generator_only-{point}", f"remdm_conf_budget@generator_only-{point}"},
                         "ceiling": {f"oracle_loo@generator_only-{point}"}}
    metrics = json.loads((p / "results/scale/metrics.json").read_text())
    cells = {(c["point"], c["model"], c["level"]) for c in metrics["cells"]}
    assert cells == {(point, model, level) for point in POINTS for model in ("multitask", "posthoc", "generator_only")
                     for level in ("text", "second")}
    words = ("beats", "level", "loses", "no verdict", "disagree", "mixed")
    beats_only = r"beats `confidence` only \((vs `remdm_conf_budget`: [a-z ]+|rep-4 over \d\.\d{3}|vs `remdm_conf_budget`: [a-z ]+; rep-4 over \d\.\d{3})\)"
    ceiling = r"ceiling \(oracle\): its headroom|oracle (behind|level with) `confidence`( here)?: no headroom measured|oracle: [a-z ]+"
    assert all(c["verdict"] in words or re.fullmatch(beats_only, c["verdict"]) for c in metrics["cells"] if c["kind"] != "oracle")
    assert all(re.fullmatch(ceiling, c["verdict"]) for c in metrics["cells"] if c["kind"] == "oracle")
    comparisons = {(c["policy"], c["baseline"]) for c in metrics["comparisons"]}
    assert ("critic_fused@posthoc-steps500", "confidence@posthoc-steps500") in comparisons
    assert not any(base.split("@")[-1] != row.split("@")[-1] for row, base in comparisons)  # own model only
    summary = (p / "results/scale/summary.md").read_text()
    assert "`scale_evaluate` and `scale_summary` stages of `make scale`" in summary and "**Over the axis**" in summary
    assert summary.index("| steps500 |") < summary.index("| steps1500 |") < summary.index("| steps4500 |")
    assert "| steps4500 | 12 |" in summary and "| `posthoc` |" in summary and "+0.00% |" in summary
    oracle_rows = [line for line in summary.splitlines() if "`oracle_loo@generator_only-" in line]
    assert oracle_rows and all("oracle" in line.strip(" |").split("|")[-1] for line in oracle_rows)  # read as a ceiling


def test_a_row_drawn_by_two_stages_is_refused_not_counted_twice(scale_run, tmp_path):
    """Results left from before a row moved stages (the oracle, once in generator_only's): the
    summary names both logs instead of scoring the row's texts twice (intervals too narrow)."""
    project = tmp_path / "stale"
    shutil.copytree(scale_run, project, ignore=shutil.ignore_patterns(".dvc", ".git", "reports"))
    point = project / "results/scale/samples/steps500"
    logs = {f: json.loads((point / f / "tuning.json").read_text()) for f in ("generator_only", "ceiling")}
    (point / "generator_only/tuning.json").write_text(json.dumps({**logs["generator_only"], **logs["ceiling"]}))
    refused = subprocess.run([sys.executable, "-m", "pipeline.evaluate_scale", "--point", "steps500", "--judged-dir",
                              str(tmp_path / "judged")], cwd=project, env=project_env(project), capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert ("oracle_loo@generator_only-steps500 is drawn in both results/scale/samples/steps500/generator_only/"
            "tuning.json and results/scale/samples/steps500/ceiling/tuning.json") in refused.stderr


def test_each_point_is_judged_alone_and_the_summary_refuses_points_judged_against_another_text(scale_run, tmp_path):
    """scale_evaluate@<point> judges one point (a row is only compared within its point); the summary
    gathers them, and a point judged before the held-out text or the judge changed is named, not mixed in."""
    p = scale_run
    merged = json.loads((p / "results/scale/metrics.json").read_text())
    judged = {point: json.loads((p / f"results/scale/evaluate/{point}.json").read_text()) for point in POINTS}
    assert all(judged[point]["cells"] == [c for c in merged["cells"] if c["point"] == point] for point in POINTS)
    assert sum(len(judged[point]["cells"]) for point in POINTS) == len(merged["cells"])
    project = tmp_path / "mixed"
    shutil.copytree(scale_run, project, ignore=shutil.ignore_patterns(".dvc", ".git", "reports"))
    stale = project / "results/scale/evaluate/steps4500.json"  # not the first point the summary reads (steps1500)
    moved = {level: bits + 0.1 for level, bits in judged["steps4500"]["levels"].items()}
    stale.write_text(json.dumps({**judged["steps4500"], "levels": moved}))
    refused = subprocess.run([sys.executable, "-m", "pipeline.summarize_scale", "--judged-dir", "results/scale/evaluate"],
                             cwd=project, env=project_env(project), capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert ("results/scale/evaluate/steps4500.json and results/scale/evaluate/steps1500.json hold different levels"
            in refused.stderr) and "rerun scale_evaluate@steps4500 and scale_evaluate@steps1500" in refused.stderr


def test_notebook_05_draws_the_curve(scale_run):
    p = scale_run
    assert (p / "reports/05_scale_axis.html").is_file()
    assert {f.stem for f in (p / "reports/figures/05_scale_axis").glob("*.png")} == {"curve", "generator_cost"}


def test_sampling_sharded_over_two_torchrun_processes_writes_what_one_process_writes(scale_run, tmp_path):
    """sample.streams per_batch: two CPU (gloo) processes share every draw's batches (the tiny draws hold
    two batches each), and the first writes the tuning log and samples one process writes, byte for byte;
    the sequential stream is refused under torchrun."""
    project = tmp_path / "shard"
    shutil.copytree(scale_run, project, ignore=shutil.ignore_patterns(".dvc", ".git", "reports"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    out = project / "results/scale/samples/steps500/multitask"
    command = ["-m", "pipeline.sample", "--scale-point", "steps500", "--variant", "multitask"]
    env = {**project_env(project), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

    refused = subprocess.run([*torchrun, *command], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "sample.streams: per_batch" in refused.stderr
    params["sample"]["streams"] = "per_batch"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    drawn = {}
    for name, launcher in (("one", [sys.executable]), ("two", torchrun)):
        run = subprocess.run([*launcher, *command], cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        drawn[name] = {f: (out / f).read_bytes() for f in ("samples.jsonl", "tuning.json")}
        shutil.rmtree(out)
    assert drawn["one"] == drawn["two"]
    before = [json.loads(line)["text"] for line in (scale_run / out.relative_to(project) / "samples.jsonl").open()]
    after = [json.loads(line)["text"] for line in drawn["one"]["samples.jsonl"].decode().splitlines()]
    assert len(before) == len(after) and before != after  # per-batch streams are other streams than the sequential one


@pytest.fixture(scope="module")
def gpu_preset_run(tmp_path_factory):
    """The GPU preset (presets/gpu.yaml) applied to a project, then a second preset that shrinks it to
    tiny sizes while keeping its point names, its per-batch streams and a torchrun launcher, here of
    two CPU (gloo) processes: the preset's pipeline end to end, every training under DDP and every
    sampling sharded."""
    project = make_project(tmp_path_factory.mktemp("gpu"))
    preset = yaml.safe_load((REPO / "presets" / "gpu.yaml").read_text())
    shrink = {"data": yaml.safe_load((project / "params.yaml").read_text())["data"],
              "sample": {"batch_size": 3},
              "scale": {"launcher": "torchrun --standalone --nproc_per_node=2", "nfe_budgets": [8], "num_samples": 6,
                        "models": TINY["scale"]["models"], "ceiling": TINY["scale"]["ceiling"],
                        "judge": {"train": {"max_steps": 12}},
                        "points": {name: {"model": TINY_MODEL, "train": {"max_steps": 4 * (i + 1), "eval_every": 4,
                                                                          "checkpoint_every": 4, "compile": False}}
                                   for i, name in enumerate(preset["scale"]["points"])}}}
    (project / "tiny.yaml").write_text(yaml.safe_dump(shrink))
    env = project_env(project)
    for applied in (REPO / "presets" / "gpu.yaml", project / "tiny.yaml"):
        run = subprocess.run([sys.executable, "-m", "pipeline.preset", str(applied)], cwd=project, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
    result = dvc(project, "repro", "scale/dvc.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return project, list(preset["scale"]["points"])


def test_the_gpu_preset_runs_end_to_end_under_torchrun_at_a_tiny_size(gpu_preset_run):
    p, points = gpu_preset_run
    params = yaml.safe_load((p / "params.yaml").read_text())
    assert params["sample"]["streams"] == "per_batch" and params["data"]["split"] == "documents"
    lock = yaml.safe_load((p / "scale" / "dvc.lock").read_text())["stages"]
    assert lock[f"scale_sample@{points[0]}-multitask"]["cmd"].startswith("torchrun --standalone --nproc_per_node=2 ")
    for i, point in enumerate(points):
        info = json.loads((p / f"models/scale/{point}/multitask/config.json").read_text())
        assert info["step"] == 4 * (i + 1)
    metrics = json.loads((p / "results/scale/metrics.json").read_text())
    assert {c["point"] for c in metrics["cells"]} == set(points)
    summary = (p / "results/scale/summary.md").read_text()
    assert all(f"| {point} |" in summary for point in points)
