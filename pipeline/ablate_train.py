"""Study stage ``ablate_train@<arm>``: one critic lever per arm, trained.

The arm continues ``models/multitask`` for ``ablation.steps`` steps with its overrides of the
``model``, ``train`` and ``critic`` sections (the ``baseline`` arm with none, so every arm has had
the same compute), into ``models/ablation/<arm>/`` with its curves under
``results/ablation/<arm>/train/``. ``pipeline.ablate_measure`` measures it; the two are separate
stages and modules so that a change to sampling or to a metric re-measures without retraining.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pipeline._common import DATA_DIR, arm_of, arm_parser, run_stage
from remask.config import Params
from remask.data import load_meta
from remask.train import TrainingError, run_spec, train


def train_arm(params: Params, arm: str, models_dir: Path, results_dir: Path) -> None:
    cfg = params.ablation
    arm_params = params.for_arm(arm)
    spec = run_spec(arm_params, "multitask", load_meta(DATA_DIR), models_dir, results_dir)
    schedule = {"max_steps": cfg.steps, "lr": cfg.lr, "min_lr": cfg.lr / 10, "warmup_steps": 0,
                "alpha_warmup_steps": 0, "eval_every": cfg.steps, "checkpoint_every": max(1, cfg.steps // 4)}
    diffusion = arm_params.train.model_copy(update=schedule)
    spec = dataclasses.replace(
        spec, variant=f"ablation_{arm}", optim=diffusion, diffusion=diffusion, init_from=models_dir / "multitask",
        out_dir=models_dir / "ablation" / arm, live_dir=results_dir / "ablation" / arm / "train",
    )
    try:
        train(spec, DATA_DIR)
    except TrainingError as exc:
        raise SystemExit(f"ablate_train: error: {exc}") from None


def main(params: Params, args: argparse.Namespace) -> None:
    train_arm(params, arm_of(params, args.arm), Path(args.models_dir), Path(args.results_dir))


if __name__ == "__main__":
    run_stage("ablate_train", main, arm_parser("ablate_train"))
