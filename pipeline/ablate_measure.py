"""Study stage ``ablate_measure@<arm>``: one critic lever per arm, measured.

The arm trained by ``ablate_train@<arm>`` (``pipeline.ablate_train``) is measured on the test
split (a change to sampling or to a metric re-measures without retraining):

- the generator's validation loss (what the lever costs the generator);
- error detection on real sampler states (infilling rollouts of the ``confidence`` policy):
  AUROC of the critic, of the ``critic_fused`` score and of the stale confidence;
- samples of every policy of ``ablation.policies`` at NFE ``ablation.nfe``, tuned on the tuning
  draw and reported on a fresh one (``ablation.seed``) exactly as the main comparison
  (:mod:`remask.tuning`), each policy's judge NLL at the text's entropy and its difference from
  the same arm's ``confidence`` with a bootstrap interval (:mod:`remask.frontier`).

It writes ``results/ablation/<arm>/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline._common import DATA_DIR, arm_of, arm_parser, run_stage
from remask.atomic import write_json
from remask.checkpoint import load_judge, load_model
from remask.config import ConfigError, Params, PolicySampling
from remask.data import fixed_windows, load_meta, load_split, split_text, words
from remask.detection import rollout_scores, summarise
from remask.frontier import difference, frontier_point
from remask.judge import judge_nll_bits
from remask.metrics import setting_samples
from remask.policies import require_trained, untrained_inputs
from remask.records import TEXT_LEVEL
from remask.runtime import resolve_device
from remask.sampling import SamplerOptions
from remask.tuning import RowPlan, Search, sampler_draw_at, target_entropy, trained_search, tune_row


def measure_arm(params: Params, arm: str, models_dir: Path) -> dict:
    cfg, device, es = params.ablation, resolve_device(params.sample.device), params.evaluate_samples
    arm_dir = models_dir / "ablation" / arm
    model, tok, training = load_model(arm_dir, device)
    judge = load_judge(models_dir / "judge", tok, arm_dir, device)
    temperatures = tuple(params.sample.tuning.temperature_range)
    require_trained("confidence", training, temperatures, str(arm_dir))
    untrained = {p: untrained_inputs(p, training, temperatures) for p in cfg.policies}
    policies = [p for p in cfg.policies if not untrained[p]]  # an arm's lever may take a policy's input away
    test = load_split(DATA_DIR, "test", load_meta(DATA_DIR))
    vocabulary = set(words(split_text(DATA_DIR, "train")))

    windows = fixed_windows(test, cfg.eval_windows, model.config.block_size)
    options = SamplerOptions(steps=cfg.rollout_steps, policy="confidence", **params.sample.sampler_options())
    scores = rollout_scores(model, windows, params.evaluate_critic.rollout_mask_ratio, options, seed=cfg.seed)
    detection = {name: m["auroc"] for name, m in summarise({k: v for k, v in scores.items() if k != "step"}, 10).items()}

    target = target_entropy(DATA_DIR, tok, params.sample.num_samples, params.sample.length)
    search = Search(judge, tok, {TEXT_LEVEL: target}, params.sample, cfg.seed, lambda m: print(f"[ablate {arm}] {m}", flush=True))
    pools = params.sample.tuning.model_copy(update={"committed_budgets": cfg.committed_budgets})
    arm_grid = params.sample.model_copy(update={"nfe_budgets": [cfg.nfe], "num_samples": cfg.num_samples,
                                                "tuning": pools})
    samples, frontier, tuned = {}, {}, {}
    for policy in policies:
        plan = RowPlan.of(policy, PolicySampling(), arm_grid, policy, arm_dir,
                          trained_search(policy, training, pools, search.log))
        rows, log = tune_row(plan, sampler_draw_at(model, tok, params.sample, policy), search)
        tuned[policy] = log.budgets[cfg.nfe].tuned.to_dict()
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
    arm = arm_of(params, args.arm)
    models_dir, results_dir = Path(args.models_dir), Path(args.results_dir)
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
    run_stage("ablate_measure", main, arm_parser("ablate_measure"))
