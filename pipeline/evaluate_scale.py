"""DVC stage ``scale_evaluate@<point>``: one compute point's verdict, ``<--judged-dir>/<point>.json``.

Reads the point's rows (``results/scale/samples/<point>/<model>/`` and the ceiling's in
``<point>/ceiling/``; rows ``<row>@<model>-<point>``, each drawn by one stage), scores them with the
axis's judge (``models/scale/judge``) and the text metrics exactly as ``evaluate_samples`` does
(:mod:`pipeline._scoring`), compares every row with its own model's ``confidence`` and
``remdm_conf_budget`` (:func:`remask.report.compare_policies`: a row is only ever compared within its
point, so each point is judged alone) and writes its cells (:class:`remask.scale.CellResult`), its
validation numbers and generator compute, for ``scale_summary`` (:mod:`pipeline.summarize_scale`), in
``--judged-dir`` (``results/scale/evaluate`` in ``scale/dvc.yaml``, which both stages are given).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline._common import CEILING, SCALE_RESULTS, SCALE_SAMPLES, read_json, run_stage, scale_variant
from pipeline._scoring import Scorer, report_groups
from remask.atomic import write_json
from remask.checkpoint import load_model
from remask.config import ConfigError, Params
from remask.records import TuningLog
from remask.report import REP4_LIMIT, compare_policies
from remask.runtime import resolve_device
from remask.scale import PointRecord, scale_cells


def point_record(params: Params, point: str, models: Path) -> PointRecord:
    """A compute point's steps, its generator's training compute and each model's validation numbers."""
    run = params.for_scale(point, "generator_only")
    generator, _, _ = load_model(models / "scale" / point / "generator_only", resolve_device("cpu"))
    characters = run.train.max_steps * run.train.batch_size * run.model.block_size
    val = {name: read_json(SCALE_RESULTS / "train" / point / name / "metrics.json",
                           f"scale_train@{point}-{name}")["val"] for name in params.scale.models}
    return PointRecord(point, run.train.max_steps, 6.0 * generator.num_parameters() * characters, val)


def point_folders(params: Params, point: str) -> list[tuple[Path, str, str]]:
    """Where each stage of the point writes its rows: ``(folder, model, stage)``, the ceiling's last."""
    stages = [(name, name, f"scale_sample@{point}-{name}") for name in params.scale.models]
    return [(SCALE_SAMPLES / point / folder, model, stage)
            for folder, model, stage in [*stages, (CEILING, params.scale.ceiling.model, f"scale_ceiling@{point}")]]


def point_tuning(params: Params, point: str) -> tuple[dict[str, TuningLog], dict[str, str], dict[str, Path]]:
    """The point's tuning logs, each row's model and the log it came from; a row drawn by two stages
    (results left from before it moved stages) is refused, never scored twice."""
    tuning, model_of, drawn_in = {}, {}, {}
    for where, model, stage in point_folders(params, point):
        logs = read_json(where / "tuning.json", stage)
        twice = sorted(set(logs) & set(drawn_in))
        if twice:
            raise ConfigError(f"{twice[0]} is drawn in both {drawn_in[twice[0]]} and {where / 'tuning.json'}: "
                              f"a row belongs to one stage; rerun {stage} or the stage that drew it first "
                              "(params changed since one of them ran)")
        tuning.update({row: TuningLog.from_dict(raw, scale_variant(model, point)) for row, raw in logs.items()})
        model_of.update({row: model for row in logs})
        drawn_in.update({row: where / "tuning.json" for row in logs})
    return tuning, model_of, drawn_in


def main(params: Params, args: argparse.Namespace) -> None:
    point = args.point
    if point not in params.scale.points:
        raise ConfigError(f"--point {point!r} is not one of scale.points ({', '.join(params.scale.points)})")
    grid, cfg = params.scale_grid(), params.evaluate_samples
    params.scale_judge()  # the judge still outranks every point's generator (points may have grown since it trained)
    models = Path(args.models_dir)
    scorer = Scorer.of(models / "scale" / "judge", grid)
    reference, levels = scorer.reference(grid.sample)
    tuning, model_of, drawn_in = point_tuning(params, point)
    files = [where / "samples.jsonl" for where, _, _ in point_folders(params, point)]
    settings, samples = scorer.settings(report_groups(files))
    frontiers = scorer.frontiers(samples, tuning, levels, lambda row: str(drawn_in[row]))
    records = compare_policies(samples, frontiers, tuning, levels, cfg.bootstrap_resamples, cfg.confidence_level,
                               cfg.seed + 4)
    cells = scale_cells(records, frontiers, tuning, {row: (point, model) for row, model in model_of.items()})
    out = Path(args.judged_dir) / f"{point}.json"
    write_json(out, {
        "point": point_record(params, point, models).to_dict(), "reference": reference, "levels": levels,
        "frontier": {f.key: f.to_dict() for f in frontiers.values()},
        "settings": {s.key: s.to_dict() for s in settings},
        "comparisons": [r.to_dict() for r in records],
        "cells": [c.result(REP4_LIMIT * reference["rep_4"]).to_dict() for c in cells],
    })
    print(f"{point}: {len(settings)} settings, {len(records)} comparisons, {len(cells)} cells "
          f"-> {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate_scale")
    parser.add_argument("--point", required=True, help="the compute point of scale.points to judge")
    parser.add_argument("--judged-dir", required=True, help="where to write <point>.json for scale_summary")
    parser.add_argument("--models-dir", default="models")
    run_stage("evaluate_scale", main, parser)
