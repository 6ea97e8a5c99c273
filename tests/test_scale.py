"""The scale axis: its params are checked where they would mislead (a judge weaker than what it
judges, a post-hoc critic without its generator), and its summary gives a verdict per compute point
and family against the family's own model, in the order of compute, never an extrapolated number."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, REPO_PARAMS, params_with
from remask.config import ConfigError, load_params
from remask.records import Comparison, TuningLog
from remask.scale import Cell, CellResult, PointRecord, oracle_reading, render_scale, scale_cells


def comparison(policy: str, baseline: str, better: int, value: float | None = -0.1, bracketed: bool = True,
               kind: str = "learned") -> Comparison:
    nll = {"difference": value, "ci": None if value is None else [value - 0.04, value + 0.04], "better": better}
    rest = {"difference": None, "ci": None, "better": 0} if value is None else {"difference": 0.0, "ci": [0.0, 0.0],
                                                                              "better": 0}
    return Comparison(32, policy, baseline, {"judge_nll": nll, "word_validity": rest, "ngram_jsd": rest}, bracketed,
                      kind)


def test_the_axis_judge_must_be_as_long_trained_as_the_longest_generator():
    with pytest.raises(ConfigError, match="scale.judge: the axis's judge .* must be at least as large and trained"):
        params_with({"scale": {"judge": {"train": {"max_steps": 1000}}}}).scale_judge()
    with pytest.raises(ConfigError, match="at least as large"):
        params_with({"scale": {"judge": {"model": {"n_layer": 1}}}}).scale_judge()
    assert REPO_PARAMS.scale_judge().train.max_steps >= max(
        REPO_PARAMS.for_scale(p, "generator_only").train.max_steps for p in REPO_PARAMS.scale.points)


def test_a_post_hoc_critic_of_the_axis_names_a_model_of_its_own_point():
    models = REPO_PARAMS.model_dump()["scale"]["models"]
    with pytest.raises(ConfigError, match="scale.models.posthoc.frozen_generator must be one of 'generator_only'"):
        params_with({"scale": {"models": {**models, "posthoc": {**models["posthoc"],
                                                                "frozen_generator": "multitask_only"}}}})
    with pytest.raises(ConfigError, match="the axis needs a model named generator_only"):
        params_with({"scale": {"models": {"multitask": models["multitask"]}}})
    # a point is params plus overrides; its post-hoc critic keeps the critic's own run (steps) whatever the point's
    assert REPO_PARAMS.for_scale("steps4500", "posthoc").train.max_steps == 500
    assert REPO_PARAMS.for_scale("steps4500", "multitask").train.max_steps == 4500


def test_the_ceiling_is_drawn_on_a_model_of_the_axis_by_its_own_stage_only(tmp_path):
    scale = REPO_PARAMS.model_dump()["scale"]
    oracle = {"num_samples": 16, "tuning_samples": 8}  # the CPU axis draws none (params.yaml), the GPU preset's
    assert params_with({"scale": {"ceiling": {"policies": {"oracle_loo": oracle}}}}).scale.ceiling.policies
    with pytest.raises(ConfigError, match="ceiling.model: 'judge' is not a model of scale.models"):
        params_with({"scale": {"ceiling": {"model": "judge"}}})
    generator_only = scale["models"]["generator_only"]
    twice = {**generator_only, "policies": {**generator_only["policies"], "oracle_loo": oracle}}
    with pytest.raises(ConfigError, match="ceiling.policies.oracle_loo: also a row of models.generator_only.policies"):
        params_with({"scale": {"models": {**scale["models"], "generator_only": twice},
                               "ceiling": {"policies": {"oracle_loo": oracle}}}})
    assert REPO_PARAMS.scale.ceiling.policies == {}  # no ceiling drawn
    with pytest.raises(ConfigError, match="policies.random: the ceiling draws oracle rows only"):
        params_with({"scale": {"ceiling": {"policies": {"oracle_loo": oracle, "random": {}}}}})
    with pytest.raises(ConfigError, match="models.ceiling: 'ceiling' names where each point's ceiling rows are"):
        params_with({"scale": {"models": {**scale["models"], "ceiling": scale["models"]["multitask"]}}})
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    for args, refusal in ((["steps500", "--row", "confidence"], "--scale-point draws a model's rows (--variant <model"),
                          (["steps500", "--variant", "ceiling"], "not a model of scale.models (generator_only, "
                                                                 "multitask, posthoc; the ceiling's rows are drawn "
                                                                 "with --ceiling)"),
                          (["steps7", "--ceiling"], "--scale-point 'steps7' is not a point of scale.points")):
        refused = subprocess.run([sys.executable, "-m", "pipeline.sample", "--scale-point", *args,
                                  "--params", str(params), "--models-dir", str(tmp_path)],  # before any model loads
                                 cwd=REPO, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and refusal in refused.stderr, refused.stderr


def cell(point: str, better: int, rep: float | None = 0.02, revisiting: int = 1, value: float | None = -0.1,
         bracketed: bool = True) -> Cell:
    row, own = f"critic_fused@multitask-{point}", f"confidence@multitask-{point}"
    return Cell(point, "multitask", row, "learned", 32, "text", comparison(row, own, better, value, bracketed),
                comparison(row, f"remdm_conf_budget@multitask-{point}", revisiting, value, bracketed), rep)


def test_a_cell_beats_only_below_both_own_baselines_with_rep_4_within_the_limit():
    assert cell("a", 1).verdict(0.06) == "beats"
    # not below its own remdm_conf_budget; repeating more than 1.5x the text: each says what it missed
    assert cell("a", 1, revisiting=0).verdict(0.06) == \
        "beats `confidence` only (vs `remdm_conf_budget`: no significant difference)"
    assert cell("a", 1, rep=0.09).verdict(0.06) == "beats `confidence` only (rep-4 over 0.060)"
    assert cell("a", 1, revisiting=0, rep=0.09).verdict(0.06) == \
        "beats `confidence` only (vs `remdm_conf_budget`: no significant difference; rep-4 over 0.060)"  # both named
    assert cell("a", -1).verdict(0.06) == "loses" and cell("a", 0).verdict(0.06) == "level"
    assert cell("a", 0, value=None, bracketed=False).verdict(0.06) == "no verdict"


def test_the_oracle_is_read_as_headroom_only_where_it_is_below_confidence():
    def oracle(better: int) -> Cell:
        row, own = "oracle_loo@generator_only-p", "confidence@generator_only-p"
        return Cell("p", "generator_only", row, "oracle", 32, "text", comparison(row, own, better, kind="oracle"),
                    None, 0.02)
    assert oracle_reading(oracle(1)) == "ceiling (oracle): its headroom"
    assert oracle_reading(oracle(-1)) == "oracle behind `confidence` here: no headroom measured"
    assert oracle_reading(oracle(0)) == "oracle level with `confidence`: no headroom measured"
    assert oracle(-1).verdict(0.06) == oracle_reading(oracle(-1))  # metrics.json and the summary read it alike
    points = [PointRecord("p", 500, 3e12, {"generator_only": {"gen_loss": 2.5, "bpc_bound": 3.6}})]
    assert "oracle behind `confidence` here" in render_scale([oracle(-1).result(0.06)], points, {"rep_4": 0.04},
                                                             {"text": 4.8}, {"bpc": 2.5}, "test")


def test_the_summary_orders_points_by_compute_and_prints_no_extrapolated_number():
    points = [PointRecord("big", 4500, 3e13, {"generator_only": {"gen_loss": 2.0, "bpc_bound": 2.9},
                                               "multitask": {"gen_loss": 2.02, "bpc_bound": 2.92}}),
              PointRecord("small", 500, 3e12, {"generator_only": {"gen_loss": 2.5, "bpc_bound": 3.6},
                                                "multitask": {"gen_loss": 2.5, "bpc_bound": 3.6}})]
    cells = [cell("big", 1), cell("small", 0, value=None, bracketed=False, rep=None)]
    # what each point's stage writes and the summary reads back (JSON), rendered as the summary renders it
    judged = [CellResult.from_dict(json.loads(json.dumps(c.result(0.06).to_dict()))) for c in cells]
    assert judged == [c.result(0.06) for c in cells]
    assert [PointRecord.from_dict(json.loads(json.dumps(p.to_dict()))) for p in points] == points
    text = render_scale(judged, points, {"rep_4": 0.04}, {"text": 4.8}, {"bpc": 2.5}, "test")
    assert text.index("| small | 500 |") < text.index("| big | 4,500 |")
    assert "| big | 4,500 | 3.00e+13 | `multitask` | 2.0200 | 2.920 | +1.00% |" in text
    small = next(line for line in text.splitlines() if line.startswith("| small | `multitask` |"))
    assert "extrapolated" in small and "no verdict" in small
    assert not any(ch.isdigit() for part in small.split("|")[4:8] for ch in part)
    assert "`multitask` small: no verdict (extrapolated), big: beats (-0.100 [-0.140, -0.060] (±0.040))." in text


def test_cells_keep_learned_rows_and_the_oracle_against_their_own_models_confidence():
    variant_of = {f"{r}@{m}-p": ("p", m) for r, m in (("confidence", "multitask"), ("critic_fused", "multitask"),
                                                      ("confidence", "generator_only"), ("oracle_loo", "generator_only"),
                                                      ("remdm_conf_budget", "multitask"))}
    records = [comparison("critic_fused@multitask-p", "confidence@multitask-p", 0),
               comparison("critic_fused@multitask-p", "confidence@generator_only-p", 1),  # another model's: not kept
               comparison("oracle_loo@generator_only-p", "confidence@generator_only-p", 1, kind="oracle"),
               comparison("remdm_conf_budget@multitask-p", "confidence@multitask-p", 0, kind="training_free"),
               comparison("critic_fused@multitask-p", "remdm_conf_budget@multitask-p", 0)]
    frontiers = {(r, 32, "text"): type("F", (), {"value": staticmethod(lambda m: 0.02)})() for r in variant_of}
    tuning = {row: TuningLog(row, {"runs": "remdm_conf" if row.startswith("remdm") else row.split("@")[0],
                                   "committed_budget": 0.02 if row.startswith("remdm") else None}, "m", 4.8, 1, 0)
              for row in variant_of}
    cells = scale_cells(records, frontiers, tuning, variant_of)
    assert [(c.row, c.vs_confidence.baseline) for c in cells] == [
        ("critic_fused@multitask-p", "confidence@multitask-p"), ("oracle_loo@generator_only-p", "confidence@generator_only-p")]
    assert cells[0].vs_revisiting.baseline == "remdm_conf_budget@multitask-p" and cells[1].vs_revisiting is None


def _preset(params: Path, preset: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.preset", str(preset), "--params", str(params)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_gpu_preset_changes_only_what_it_names_and_keeps_every_comment(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    applied = _preset(params, REPO / "presets" / "gpu.yaml")
    assert applied.returncode == 0, applied.stderr
    after = load_params(params)
    assert list(after.scale.points) == ["w256", "w384", "w512"] and after.scale.nfe_budgets == [32, 64]
    assert after.sample.streams == "per_batch" and after.scale.launcher.startswith("torchrun")
    assert after.for_scale("w512", "multitask").model.n_embd == 512
    assert after.for_scale("w512", "posthoc").train.max_steps == 1000  # the model's overrides over the point's
    oracle = after.scale.ceiling.policies["oracle_loo"]  # the preset's oracle: the full search, on more texts
    assert after.scale.ceiling.model == "generator_only" and oracle.num_samples == 128 and oracle.selections is None
    after.scale_judge()  # as large and as long-trained as the largest generator, or refused
    for section in type(after).model_fields:
        if section not in ("data", "sample", "scale"):
            assert getattr(after, section) == getattr(REPO_PARAMS, section), section
    assert after.sample.policies == REPO_PARAMS.sample.policies and after.data.sha256 == REPO_PARAMS.data.sha256
    before, text = (REPO / "params.yaml").read_text(), params.read_text()
    kept = [line for line in before.splitlines() if "#" in line and "scale" not in line and "points" not in line]
    assert sum(line in text for line in kept) >= 0.9 * len(kept)  # the comments of what the preset leaves stay
    assert "# critic loss weight; generator_only forces 0" in text and "# faster than 128 on a 2-core CPU" in text


def test_a_bad_preset_is_refused_naming_the_key_and_writes_nothing(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    preset = tmp_path / "bad.yaml"
    preset.write_text("sample: {streams: sideways}\n")
    refused = _preset(params, preset)
    assert refused.returncode == 2 and "sample.streams" in refused.stderr
    assert params.read_text() == (REPO / "params.yaml").read_text()
    preset.write_text("scale: {launcher: mpirun -n 2}\n")
    assert "scale.launcher" in _preset(params, preset).stderr
