"""DVC stages ``sample@<policy>``, ``study_sample@<policy>`` and ``sample_judge``: draw the samples.

``sample@<policy>`` tunes the policy's knobs on the tuning draw (``sample.tuning_seed``) at every
NFE budget (:mod:`remask.tuning`: the temperature that reaches the test text's entropy, for each
selection rule, and the best rule by judge NLL there), then draws the report samples on
``sample.seed`` at two temperatures around the tuned one. It writes the report samples to
``results/samples/<policy>.jsonl`` and every tuning pilot to ``results/tuning/<policy>.json``.
``--tier study`` does the same on the study's grid (``study.sample``) under ``results/study/``;
``--variant <name>`` samples every row of a study variant (``study.variants``) on its own model
``models/study/<name>`` into ``results/study/variants/<name>/``, rows named ``<row>@<name>``.
``scale_sample@<point>-<model>`` (``--scale-point <point> --variant <model>``) samples every row of
a model of the scale axis on the study's grid settings into ``results/scale/samples/<point>/<model>/``;
``scale_ceiling@<point>`` (``--scale-point <point> --ceiling``) the axis's ceiling rows (the oracle,
``scale.ceiling``) on their model into ``results/scale/samples/<point>/ceiling/``.
``sample_judge`` writes ``results/samples/judge.jsonl``: unconditional samples of the causal
judge, the reference row. Every row goes through the one search, :func:`remask.tuning.tune_row`, as the public peer's row
does (``pipeline.peer_sample``). Under ``torchrun --nproc_per_node=N -m pipeline.sample ...`` the
processes share every draw's batches and the first writes the same files one process would
(``sample.streams: per_batch``; the sequential stream is refused there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline._common import CEILING, SCALE_SAMPLES, run_stage, samples_dir, scale_variant, tier_results, write_rows
from pipeline._sampling import sample_rows
from remask.atomic import write_json
from remask.checkpoint import load_model
from remask.config import TIERS, ConfigError, Params, PolicySampling
from remask.judge import judge_generate
from remask.runtime import World, close_world, init_world, resolve_device


def sample_judge(params: Params, model_dir: Path, out: Path) -> None:
    cfg = params.sample
    model, tok, _ = load_model(model_dir, resolve_device(cfg.device))
    texts = judge_generate(model, tok, cfg.num_samples, cfg.length, temperature=1.0, seed=cfg.seed, progress=True)
    rows = [{"policy": "judge", "nfe_budget": cfg.length, "steps": cfg.length, "nfe": cfg.length, "temperature": 1.0,
             "seed": cfg.seed, "index": i, "text": t} for i, t in enumerate(texts)]
    write_rows(rows, out)


def write_drawn(world: World, tuning_path: Path, tuning: dict, samples_path: Path, samples: list[dict]) -> None:
    """A stage's tuning log and samples, written by the first process only (every process drew the same)."""
    if world.is_main:
        write_json(tuning_path, tuning)
        write_rows(samples, samples_path)


def scale_rows(params: Params, point: str, variant: str | None) -> tuple[str, dict[str, PolicySampling]]:
    """``(model, rows)`` that ``scale_sample`` draws at ``point``: the rows of the model ``variant``,
    or with ``variant`` ``None`` the ceiling's (oracle rows only) on ``scale.ceiling.model``."""
    axis = params.scale
    if point not in axis.points:
        raise ConfigError(f"--scale-point {point!r} is not a point of scale.points: {', '.join(axis.points)}")
    if variant is not None:
        if variant not in axis.models:
            raise ConfigError(f"--scale-point {point} --variant {variant!r}: not a model of scale.models "
                              f"({', '.join(axis.models)}; the ceiling's rows are drawn with --ceiling)")
        return variant, axis.models[variant].policies
    return axis.ceiling.model, axis.ceiling.policies  # oracle rows only (remask.config.Ceiling)


def scale_sample(params: Params, point: str, variant: str | None, models: Path, world: World) -> None:
    """The rows of the model ``variant`` at the scale axis's ``point`` (``None``: the ceiling's), on
    the study's grid settings at the axis's budgets, scored by the axis's judge; rows
    ``<row>@<model>-<point>``, written under ``<point>/<variant>`` (the ceiling's under
    ``<point>/ceiling``)."""
    model, rows = scale_rows(params, point, variant)
    samples, logs = sample_rows(params.scale_grid(), rows, models / "scale" / point / model,
                                models / "scale" / "judge", variant=scale_variant(model, point), world=world)
    out = SCALE_SAMPLES / point / (CEILING if variant is None else variant)
    write_drawn(world, out / "tuning.json", {row: log.to_dict() for row, log in logs.items()}, out / "samples.jsonl",
                samples)


def main(params: Params, args: argparse.Namespace) -> None:
    """One process, or several under ``torchrun`` sharing every draw's batches (``sample.streams:
    per_batch``); the first process writes."""
    world, _ = init_world(params.sample.device)
    try:
        run(params, args, world)
    finally:
        close_world(world)


def run(params: Params, args: argparse.Namespace, world: World) -> None:
    models = Path(args.models_dir)
    if sum(map(bool, (args.row, args.variant, args.judge, args.ceiling))) != 1:
        raise ConfigError("name one of --row (a row of the tier's grid), --variant, --ceiling or --judge")
    if args.ceiling and not args.scale_point:
        raise ConfigError("--ceiling draws the scale axis's ceiling rows: name its point with --scale-point")
    if args.scale_point and not (args.variant or args.ceiling):
        raise ConfigError("--scale-point draws a model's rows (--variant <model of scale.models>) or the ceiling's "
                          "(--ceiling)")
    if args.judge:
        if world.is_main:
            sample_judge(params, models / "judge", Path(args.out_dir or samples_dir(args.tier)) / "judge.jsonl")
        return
    if args.scale_point:
        scale_sample(params, args.scale_point, None if args.ceiling else args.variant, models, world)
        return
    if args.variant:
        variants = params.study.variants
        if args.variant not in variants:
            raise ConfigError(f"--variant {args.variant!r} is not in study.variants: {', '.join(variants)}")
        samples, logs = sample_rows(params.for_tier("study"), variants[args.variant].policies,
                                    models / "study" / args.variant, models / "judge", variant=args.variant, world=world)
        out = tier_results("study") / "variants" / args.variant
        write_drawn(world, out / "tuning.json", {name: log.to_dict() for name, log in logs.items()},
                    out / "samples.jsonl", samples)
        return
    out_dir = Path(args.out_dir) if args.out_dir else samples_dir(args.tier)
    grid = params.for_tier(args.tier)
    if args.row not in grid.sample.policies:
        raise ConfigError(f"--row {args.row!r} is not a row of this tier's grid: {', '.join(grid.sample.policies)}")
    samples, logs = sample_rows(grid, {args.row: grid.sample.policies[args.row]}, models / "multitask",
                                models / "judge", world=world)
    write_drawn(world, tier_results(args.tier) / "tuning" / f"{args.row}.json", logs[args.row].to_dict(),
                out_dir / f"{args.row}.jsonl", samples)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample")
    parser.add_argument("--row", default=None, help="a row of the tier's grid (sample.policies or study.sample.policies)")
    parser.add_argument("--variant", default=None, help="sample every row of this study variant (with --scale-point: "
                        "this model of scale.models) on its model")
    parser.add_argument("--scale-point", default=None, help="a point of the scale axis (scale.points)")
    parser.add_argument("--ceiling", action="store_true", help="with --scale-point: the ceiling's rows "
                        "(scale.ceiling, the oracle) on their model, in a stage of their own")
    parser.add_argument("--judge", action="store_true", help="the causal judge's own samples, the reference row")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--tier", choices=TIERS, default="quick", help="whose grid: quick (sample) or study (study.sample)")
    parser.add_argument("--out-dir", default=None, help="default: results/samples, or results/study/samples")
    run_stage("sample", main, parser)
