"""DVC stages ``train_multitask``, ``train_generator_only`` and ``train_judge``: train one model (``--model``).

- ``multitask``: generator + critic, ``loss = loss_gen + train.alpha * loss_critic``;
- ``generator_only``: the same run with ``alpha = 0`` (what the critic costs the generator);
- ``judge``: the causal character model that scores samples (``judge`` section);
- ``--study-variant <name>`` (the study's ``study_train@<name>``): a critic target or the
  self-correcting generator, trained like ``multitask`` with the variant's overrides;
- ``--scale-point <point> --scale-model <model>`` (``scale_train@<point>-<model>``): a model of the
  scale axis; ``--scale-judge`` (``scale_judge``): the axis's judge.

Runs alone or under ``torchrun --standalone --nproc_per_node=N -m pipeline.train``.
"""

from __future__ import annotations

import argparse
import json

from pipeline._common import DATA_DIR, run_stage
from remask.config import Params
from remask.data import load_meta
from remask.train import MODEL_KINDS, TrainingError, run_spec, scale_judge_spec, scale_run_spec, study_run_spec, train


def main(params: Params, args: argparse.Namespace) -> None:
    meta = load_meta(DATA_DIR)
    if args.scale_judge:
        spec = scale_judge_spec(params, meta)
    elif args.scale_point or args.scale_model:
        spec = scale_run_spec(params, args.scale_point, args.scale_model, meta)
    elif args.study_variant:
        spec = study_run_spec(params, args.study_variant, meta)
    else:
        spec = run_spec(params, args.model, meta)
    try:
        result = train(spec, DATA_DIR, stop_after=args.stop_after)
    except TrainingError as exc:
        raise SystemExit(f"train: error: {exc}") from None
    if result.metrics:
        print(json.dumps({"variant": spec.variant, "step": result.step, **result.metrics}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.train")
    parser.add_argument("--model", choices=MODEL_KINDS, default="multitask", help="which model of the quick tier")
    parser.add_argument("--study-variant", default=None, help="train this study variant (study.variants) instead")
    parser.add_argument("--scale-point", default=None, help="with --scale-model: a model of the scale axis at this point")
    parser.add_argument("--scale-model", default=None, help="a model of scale.models, trained at --scale-point")
    parser.add_argument("--scale-judge", action="store_true", help="train the scale axis's judge (scale.judge)")
    parser.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    run_stage("train", main, parser)
