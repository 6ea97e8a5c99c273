"""Study stages ``ablate_train@<arm>`` and ``ablate_measure@<arm>``: one critic lever per arm.

``--step train``: the arm continues ``models/multitask`` for ``ablation.steps`` steps with its
overrides of the ``model``, ``train`` and ``critic`` sections (the ``baseline`` arm with none, so
every arm has had the same compute). ``--step measure`` measures it on the test split (a metric
change re-measures without retraining):

- the generator's validation loss (what the lever costs the generator);
- error detection on real sampler states (infilling rollouts of the ``confidence`` policy):
  AUROC of the critic, of the ``critic_fused`` score and of the stale confidence;
- samples of every policy of ``ablation.policies`` at NFE ``ablation.nfe`` over a temperature
  sweep, scored by the judge, and the temperature whose entropy is closest to the test text's.

Training writes ``models/ablation/<arm>/`` and its curves under ``results/ablation/<arm>/train/``;
measuring writes ``results/ablation/<arm>/metrics.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tqdm import tqdm

from pipeline._common import run_stage
from pipeline.train import DATA_DIR, build_spec
from remask.atomic import write_json
from remask.checkpoint import load_model
from remask.config import ConfigError, Params
from remask.data import fixed_windows, load_meta, load_split, split_text, words
from remask.detection import rollout_scores, summarise
from remask.judge import judge_nll_bits
from remask.metrics import text_metrics
from remask.report import matched_entropy
from remask.runtime import resolve_device
from remask.sampling import diffusion_generate, steps_for_nfe
from remask.train import TrainingError, train


def train_arm(params: Params, arm: str, models_dir: Path, results_dir: Path) -> None:
    cfg = params.ablation
    arm_params = params.for_arm(arm)
    spec = build_spec(arm_params, "multitask", load_meta(DATA_DIR), models_dir, results_dir)
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
        raise SystemExit(f"ablate: error: {exc}") from None


def measure_arm(params: Params, arm: str, models_dir: Path) -> dict:
    cfg, device = params.ablation, resolve_device(params.sample.device)
    model, tok, _ = load_model(models_dir / "ablation" / arm, device)
    judge, judge_tok, _ = load_model(models_dir / "judge", device)
    if judge_tok.chars != tok.chars:
        raise ConfigError(f"{models_dir / 'judge'} and {models_dir / 'ablation' / arm} use different vocabularies")
    meta = load_meta(DATA_DIR)
    test = load_split(DATA_DIR, "test", meta)
    vocabulary = set(words(split_text(DATA_DIR, "train")))
    length = params.sample.length
    es = params.evaluate_samples

    def quality(texts: list[str], seed: int) -> dict:
        nll = judge_nll_bits(judge, tok, texts)
        return text_metrics(texts, vocabulary, nll, es.bootstrap_resamples, es.confidence_level, seed)

    windows = fixed_windows(test, cfg.eval_windows, model.config.block_size)
    scores = rollout_scores(model, windows, "confidence", params.evaluate_critic.rollout_mask_ratio, cfg.rollout_steps,
                            1.0, seed=cfg.seed, sampler=params.sample.sampler_options())
    detection = {name: m["auroc"] for name, m in summarise({k: v for k, v in scores.items() if k != "step"}, 10).items()}
    reference = quality([tok.decode(w.tolist()) for w in fixed_windows(test, cfg.num_samples, length)], cfg.seed)

    samples = {}
    cells = [(p, t) for p in cfg.policies for t in cfg.temperatures]
    for policy, temperature in tqdm(cells, desc=f"ablate {arm}: samples", unit="setting"):
        steps = steps_for_nfe(policy, cfg.nfe)
        run = diffusion_generate(model, cfg.num_samples, length, steps, policy=policy, temperature=temperature,
                                 seed=cfg.seed, batch_size=params.sample.batch_size, **params.sample.sampler_options())
        row = quality([tok.decode(ids.tolist()) for ids in run.tokens], cfg.seed + 1)
        samples.setdefault(policy, []).append({"temperature": temperature, "steps": steps, "nfe": run.nfe, **row})
    matched = {policy: matched_entropy(rows, reference["char_entropy"]) for policy, rows in samples.items()}
    return {"rollout_auroc": detection, "reference": reference, "matched": matched, "sweep": samples}


def main(params: Params, args: argparse.Namespace) -> None:
    arm = args.arm
    if arm not in params.ablation.arms:
        raise ConfigError(f"--arm {arm!r}: valid arms are {', '.join(params.ablation.arms)} (ablation.arms)")
    models_dir, results_dir = Path(args.models_dir), Path(args.results_dir)
    if args.step == "train":
        train_arm(params, arm, models_dir, results_dir)
        return
    curves = results_dir / "ablation" / arm / "train" / "metrics.json"
    if not curves.is_file():
        raise ConfigError(f"{curves}: not found; run the ablate_train@{arm} stage first")
    val = json.loads(curves.read_text())["val"]
    measured = measure_arm(params, arm, models_dir)
    write_json(results_dir / "ablation" / arm / "metrics.json",
               {"arm": arm, "overrides": params.ablation.arms[arm], "val": val, **measured})
    print(f"[ablate {arm}] val gen loss {val['gen_loss']:.4f}; rollout AUROC "
          + ", ".join(f"{k} {v:.3f}" for k, v in measured["rollout_auroc"].items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.ablate")
    parser.add_argument("--arm", required=True, help="an arm of ablation.arms in params.yaml")
    parser.add_argument("--step", choices=("train", "measure"), required=True)
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--results-dir", default="results")
    run_stage("ablate", main, parser)
