"""DVC stages ``train_multitask``, ``train_generator_only`` and ``train_judge``: train one model (``--model``).

- ``multitask``: generator + critic, ``loss = loss_gen + train.alpha * loss_critic``;
- ``generator_only``: the same run with ``alpha = 0`` (what the critic costs the generator);
- ``judge``: the causal character model that scores samples (``judge`` section);
- ``--study-variant <name>`` (the study's ``study_train@<name>``): a critic target or the
  self-correcting generator, trained like ``multitask`` with the variant's overrides.

Runs alone or under ``torchrun --standalone --nproc_per_node=N -m pipeline.train``.
"""

from __future__ import annotations

import argparse
import json

from pipeline._common import DATA_DIR, run_stage
from remask.config import Params
from remask.data import load_meta
from remask.train import MODEL_KINDS, TrainingError, run_spec, study_run_spec, train


def main(params: Params, args: argparse.Namespace) -> None:
    meta = load_meta(DATA_DIR)
    spec = study_run_spec(params, args.study_variant, meta) if args.study_variant else run_spec(params, args.model, meta)
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
    parser.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    run_stage("train", main, parser)
