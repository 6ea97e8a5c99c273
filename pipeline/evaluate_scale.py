"""DVC stage ``scale_evaluate``: the scale axis's verdict, ``results/scale/summary.md``.

Reads every model's rows at every compute point (``results/scale/samples/<point>/<model>/``, and
the ceiling's in ``<point>/ceiling/``; rows ``<row>@<model>-<point>``, each drawn by one stage),
scores them with the axis's judge (``models/scale/judge``) and the text metrics exactly as ``evaluate_samples`` does (:mod:`pipeline._scoring`), compares every row with its
own model's ``confidence`` and ``remdm_conf_budget`` (:func:`remask.report.compare_policies`), and
writes the verdict per point, family and entropy level (:mod:`remask.scale`) with each point's
validation numbers and generator compute, plus ``results/scale/metrics.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline._common import CEILING, SCALE_RESULTS, SCALE_SAMPLES, read_json, run_stage, scale_variant
from pipeline._scoring import Scorer, report_groups
from remask.atomic import write_json, write_text
from remask.checkpoint import load_model
from remask.config import ConfigError, Params
from remask.records import TuningLog
from remask.report import REP4_LIMIT, compare_policies
from remask.runtime import resolve_device
from remask.scale import PointRecord, render_scale, scale_cells


def point_record(params: Params, point: str, models: Path) -> PointRecord:
    """A compute point's steps, its generator's training compute and each model's validation numbers."""
    run = params.for_scale(point, "generator_only")
    generator, _, _ = load_model(models / "scale" / point / "generator_only", resolve_device("cpu"))
    characters = run.train.max_steps * run.train.batch_size * run.model.block_size
    val = {name: read_json(SCALE_RESULTS / "train" / point / name / "metrics.json",
                           f"scale_train@{point}-{name}")["val"] for name in params.scale.models}
    return PointRecord(point, run.train.max_steps, 6.0 * generator.num_parameters() * characters, val)


def main(params: Params, args: argparse.Namespace) -> None:
    grid, cfg = params.scale_grid(), params.evaluate_samples
    params.scale_judge()  # the judge still outranks every point's generator (points may have grown since it trained)
    models = Path(args.models_dir)
    scorer = Scorer.of(models / "scale" / "judge", grid)
    reference, levels = scorer.reference(grid.sample)

    tuning, files, variant_of, drawn_in = {}, [], {}, {}
    for point in params.scale.points:
        stages = [(name, name, f"scale_sample@{point}-{name}") for name in params.scale.models]
        for folder, model, stage in [*stages, (CEILING, params.scale.ceiling.model, f"scale_ceiling@{point}")]:
            where = SCALE_SAMPLES / point / folder
            logs = read_json(where / "tuning.json", stage)
            twice = sorted(set(logs) & set(drawn_in))
            if twice:
                raise ConfigError(f"{twice[0]} is drawn in both {drawn_in[twice[0]]} and {where / 'tuning.json'}: "
                                  f"a row belongs to one stage; rerun {stage} or the stage that drew it first "
                                  "(params changed since one of them ran)")
            tuning.update({row: TuningLog.from_dict(raw, scale_variant(model, point)) for row, raw in logs.items()})
            variant_of.update({row: (point, model) for row in logs})
            drawn_in.update({row: where / "tuning.json" for row in logs})
            files.append(where / "samples.jsonl")
    settings, samples = scorer.settings(report_groups(files))
    frontiers = scorer.frontiers(samples, tuning, levels, lambda row: str(drawn_in[row]))
    records = compare_policies(samples, frontiers, tuning, levels, cfg.bootstrap_resamples, cfg.confidence_level,
                               cfg.seed + 4)
    cells = scale_cells(records, frontiers, tuning, variant_of)
    points = [point_record(params, point, models) for point in params.scale.points]
    judge_val = read_json(SCALE_RESULTS / "train" / "judge" / "metrics.json", "scale_judge")["val"]
    write_json(SCALE_RESULTS / "metrics.json", {
        "reference": reference, "levels": levels, "judge": judge_val,
        "points": [{"point": p.name, "steps": p.steps, "flops": p.flops, "val": dict(p.val)} for p in points],
        "frontier": {f.key: f.to_dict() for f in frontiers.values()},
        "settings": {s.key: s.to_dict() for s in settings},
        "comparisons": [r.to_dict() for r in records],
        "cells": [{"point": c.point, "model": c.model, "row": c.row, "kind": c.kind, "budget": c.budget,
                   "level": c.level, "verdict": c.verdict(REP4_LIMIT * reference["rep_4"]),
                   **{metric: dict(c.vs_confidence.differences[metric]) for metric in ("judge_nll", "ngram_jsd")}}
                  for c in cells],
    })
    summary = render_scale(cells, points, reference, levels, judge_val, "`scale_evaluate` stage of `make scale`")
    write_text(SCALE_RESULTS / "summary.md", summary)
    print(summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate_scale")
    parser.add_argument("--models-dir", default="models")
    run_stage("evaluate_scale", main, parser)
