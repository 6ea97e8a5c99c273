"""DVC stages ``train_multitask``, ``train_generator_only`` and ``train_judge``: train one model variant.

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
from dataclasses import replace
from pathlib import Path

from pipeline._common import run_stage
from remask.config import ConfigError, CriticSection, Params
from remask.data import CharTokenizer, load_meta
from remask.model import ModelConfig
from remask.train import RunSpec, TrainingError, train

DATA_DIR = Path("data/prepared")
VARIANTS = ("multitask", "generator_only", "judge")


def build_spec(params: Params, variant: str, meta: dict, models_dir: Path = Path("models"),
               results_dir: Path = Path("results")) -> RunSpec:
    """Turn validated params into the run of one variant."""
    tokenizer = CharTokenizer.from_dict(meta["tokenizer"])
    section = params.judge.model if variant == "judge" else params.model
    model = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        mask_id=tokenizer.mask_id,
        causal=variant == "judge",
        **section.model_dump(),
    )
    common = dict(variant=variant, model=model, out_dir=models_dir / variant, live_dir=results_dir / "train" / variant)
    if variant == "judge":
        return RunSpec(objective="autoregressive", optim=params.judge.train, **common)
    if variant == "multitask":
        return RunSpec(objective="diffusion", optim=params.train, diffusion=params.train, critic=params.critic, **common)
    # alpha = 0: no critic pass. The validation's critic numbers (of the untrained head) use the default
    # critic settings, so that the stage reads no `critic` params and a critic lever does not retrain it.
    diffusion = params.train.model_copy(update={"alpha": 0.0})
    return RunSpec(objective="diffusion", optim=diffusion, diffusion=diffusion, critic=CriticSection(), **common)


def study_spec(params: Params, name: str, meta: dict) -> RunSpec:
    """A study variant: trained from scratch exactly like ``multitask`` (same data, steps and seed),
    with its overrides, into ``models/study/<name>``."""
    if name not in params.study.variants:
        raise ConfigError(f"--study-variant {name!r} is not in study.variants: {', '.join(params.study.variants)}")
    spec = build_spec(params.for_variant(name), "multitask", meta)
    return replace(spec, variant=f"study/{name}", out_dir=Path("models/study") / name,
                   live_dir=Path("results/study/train") / name)


def main(params: Params, args: argparse.Namespace) -> None:
    meta = load_meta(DATA_DIR)
    spec = study_spec(params, args.study_variant, meta) if args.study_variant else build_spec(params, args.variant, meta)
    try:
        result = train(spec, DATA_DIR, stop_after=args.stop_after)
    except TrainingError as exc:
        raise SystemExit(f"train: error: {exc}") from None
    if result.metrics:
        print(json.dumps({"variant": spec.variant, "step": result.step, **result.metrics}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.train")
    parser.add_argument("--variant", choices=VARIANTS, default="multitask")
    parser.add_argument("--study-variant", default=None, help="train this study variant (study.variants) instead")
    parser.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    run_stage("train", main, parser)
