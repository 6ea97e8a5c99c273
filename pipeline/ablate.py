"""Study stages ``ablate_train@<arm>`` and ``ablate_measure@<arm>``: one critic lever per arm.

``--step train``: the arm continues ``models/multitask`` for ``ablation.steps`` steps with its
overrides of the ``model``, ``train`` and ``critic`` sections (the ``baseline`` arm with none, so
every arm has had the same compute). ``--step measure`` measures it on the test split (a metric
change re-measures without retraining):

- the generator's validation loss (what the lever costs the generator);
- error detection on real sampler states (infilling rollouts of the ``confidence`` policy):
  AUROC of the critic, of the ``critic_fused`` score and of the stale confidence;
- samples of every policy of ``ablation.policies`` at NFE ``ablation.nfe``, tuned on the tuning
  draw and reported on a fresh one (``ablation.seed``) exactly as the main comparison
  (:mod:`remask.tuning`), each policy's judge NLL at the text's entropy and its difference from
  the same arm's ``confidence`` with a bootstrap interval (:mod:`remask.frontier`).

Training writes ``models/ablation/<arm>/`` and its curves under ``results/ablation/<arm>/train/``;
measuring writes ``results/ablation/<arm>/metrics.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from pipeline._common import run_stage
from pipeline.train import DATA_DIR, build_spec
from remask.atomic import write_json
from remask.checkpoint import load_model
from remask.config import ConfigError, Params
from remask.data import fixed_windows, load_meta, load_split, reference_texts, split_text, words
from remask.detection import rollout_scores, summarise
from remask.frontier import difference, frontier_point
from remask.judge import judge_nll_bits
from remask.metrics import char_entropy, setting_samples
from remask.policies import require_trained, untrained_inputs
from remask.runtime import resolve_device
from remask.train import TrainingError, train
from remask.tuning import tune_and_draw


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
    cfg, device, es = params.ablation, resolve_device(params.sample.device), params.evaluate_samples
    arm_dir = models_dir / "ablation" / arm
    model, tok, training = load_model(arm_dir, device)
    judge, judge_tok, _ = load_model(models_dir / "judge", device)
    if judge_tok.chars != tok.chars:
        raise ConfigError(f"{models_dir / 'judge'} and {arm_dir} use different vocabularies")
    temperatures = tuple(params.sample.tuning.temperature_range)
    require_trained("confidence", training, temperatures, str(arm_dir))
    untrained = {p: untrained_inputs(p, training, temperatures) for p in cfg.policies}
    policies = [p for p in cfg.policies if not untrained[p]]  # an arm's lever may take a policy's input away
    test = load_split(DATA_DIR, "test", load_meta(DATA_DIR))
    vocabulary = set(words(split_text(DATA_DIR, "train")))

    windows = fixed_windows(test, cfg.eval_windows, model.config.block_size)
    scores = rollout_scores(model, windows, "confidence", params.evaluate_critic.rollout_mask_ratio, cfg.rollout_steps,
                            1.0, seed=cfg.seed, sampler=params.sample.sampler_options())
    detection = {name: m["auroc"] for name, m in summarise({k: v for k, v in scores.items() if k != "step"}, 10).items()}

    target = char_entropy(reference_texts(DATA_DIR, tok, params.sample.num_samples, params.sample.length))
    samples, frontier, tuned = {}, {}, {}
    for policy in policies:
        result, rows = tune_and_draw(model, judge, tok, policy, cfg.nfe, target, params.sample, cfg.num_samples,
                                     params.sample.tuning.num_samples, cfg.seed,
                                     log=lambda m: print(f"[ablate {arm}] {m}", flush=True))
        tuned[policy] = result.to_dict()
        by_temperature: dict[float, list[str]] = {}
        for row in rows:
            by_temperature.setdefault(row["temperature"], []).append(row["text"])
        samples[policy] = [setting_samples(texts, judge_nll_bits(judge, tok, texts), vocabulary, tok.chars)
                           for _, texts in sorted(by_temperature.items())]
        frontier[policy] = frontier_point(samples[policy], target, es.bootstrap_resamples, es.confidence_level, es.seed)
    differences = {p: difference(samples[p], samples["confidence"], target, es.bootstrap_resamples,
                                 es.confidence_level, es.seed) for p in policies if p != "confidence"}
    return {"rollout_auroc": detection, "target_entropy": target, "nfe": cfg.nfe, "frontier": frontier,
            "differences": differences, "tuned": tuned,
            "not_trained_for": {p: missing for p, missing in untrained.items() if missing}}


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
