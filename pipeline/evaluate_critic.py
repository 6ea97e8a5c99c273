"""DVC stage ``evaluate_critic``: the critic as an error detector on the test split.

Writes ``results/evaluate_critic/metrics.json`` (AUROC, average precision and calibration error
of every score, on one-step fills per mask ratio and on real sampler states per rollout policy,
``added_information``: what the critic adds to the heuristic's ranking when both are fitted
together, and ``refreshed``: every score against the judge's leave-one-out plausibility of each
token of the sampler's own states, with the generator's leave-one-out oracle), the labelled states
(``refreshed_states.npz``) and plot data under ``results/evaluate_critic/plots/``.

``--study`` (the study's ``study_detection``): the refreshed-target part again on
``study.detection_samples`` sampler runs, into ``results/study/detection/``. ``--variant <name>``
(``study_evaluate_critic@<name>``): the one-pass scores a study variant's model is trained for, on
the study's labelled states, into ``results/study/variants/<name>/refreshed.json``.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline._common import DATA_DIR, run_stage
from remask.atomic import write_bytes, write_csv, write_json
from remask.checkpoint import load_judge, load_model
from remask.config import EvaluateCriticSection, Params
from remask.data import fixed_windows, load_meta, load_split
from remask.detection import (REFRESHED_SCORES, StateDraw, curves, one_step_scores, refreshed_scores, rescore_states,
                              rollout_scores, summarise, summarise_refreshed)
from remask.errors import ConfigError
from remask.metrics import added_information
from remask.policies import require_trained, untrained_inputs
from remask.runtime import resolve_device
from remask.sampling import SamplerOptions

VARIANT_SCORES = ("critic", "critic_fused", "self_planning")  # a variant's one-pass scores, where trained


REFRESHED_STATES = "refreshed_states.npz"  # the labelled states, for the study variants' scores


def refreshed_table(scores: dict[str, np.ndarray], cfg: EvaluateCriticSection, names: tuple[str, ...]) -> dict:
    """The refreshed-target metrics of ``names``, per state and pooled (``positions``: the tokens
    the judge labelled of each sample's state, where not all)."""
    last = cfg.refreshed_steps - 1
    samples, states = len(np.unique(scores["sample"])), len(np.unique(scores["step"]))
    labelled = np.isfinite(scores["p_judge"])
    return {
        "policy": cfg.refreshed_policy, "steps": cfg.refreshed_steps, "implausible_below": cfg.implausible_below,
        "samples": samples, **({} if labelled.all() else {"positions": int(labelled.sum()) // (samples * states)}),
        "states": {("final" if step == last else f"step_{step + 1}"): summarise_refreshed(
            {k: v[scores["step"] == step] for k, v in scores.items()}, cfg.implausible_below, names, seed=cfg.seed)
            for step in sorted(set(scores["step"].tolist()))},
        "pooled": summarise_refreshed(scores, cfg.implausible_below, names, seed=cfg.seed),
    }


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def refreshed_detection(params: Params, model, judge, tok, samples: int, out: Path,
                        positions: int | None = None) -> dict:
    """Every score of :data:`REFRESHED_SCORES` against the refreshed target on ``samples`` sampler
    runs (their fill halfway through and their final samples, labelled by the judge at every token
    or at ``positions`` of each at random), with intervals over samples; the labelled states go to
    ``out/refreshed_states.npz``, for the study variants."""
    cfg = params.evaluate_critic
    states = (cfg.refreshed_steps // 2 - 1, cfg.refreshed_steps - 1)
    options = SamplerOptions(steps=cfg.refreshed_steps, policy=cfg.refreshed_policy, temperature=cfg.temperature,
                             **params.sample.sampler_options())
    refreshed = refreshed_scores(model, judge, tok, options,
                                 StateDraw(samples, model.config.block_size, states, cfg.seed, positions),
                                 progress=True)
    write_bytes(out / REFRESHED_STATES, _npz(refreshed))
    return refreshed_table(refreshed, cfg, REFRESHED_SCORES)


def study_detection(params: Params, models: Path, results: Path) -> None:
    """The study's refreshed-target detection: the quick tier's, on ``study.detection_samples``
    sampler runs (intervals over samples that can decide), each state labelled at
    ``study.detection_positions`` of its tokens, into ``results/study/detection/``."""
    device = resolve_device(params.sample.device)
    model_dir = models / "multitask"
    model, tok, training = load_model(model_dir, device)
    require_trained(params.evaluate_critic.refreshed_policy, training, (params.evaluate_critic.temperature,) * 2,
                    str(model_dir))
    judge = load_judge(models / "judge", tok, model_dir, device)
    out = results / "study" / "detection"
    table = refreshed_detection(params, model, judge, tok, params.study.detection_samples, out,
                                params.study.detection_positions)
    write_json(out / "refreshed.json", table)
    print(json.dumps({n: round(m["auroc"], 4) for n, m in table["pooled"].items()}, indent=2))


def evaluate_variant(params: Params, variant: str, models: Path, results: Path) -> None:
    """A study variant's one-pass scores against the refreshed target of the study's states."""
    cfg = params.evaluate_critic
    if variant not in params.study.variants:
        raise ConfigError(f"--variant {variant!r} is not in study.variants: {', '.join(params.study.variants)}")
    states = results / "study" / "detection" / REFRESHED_STATES
    if not states.is_file():
        raise ConfigError(f"{states}: not found; run the study_detection stage first")
    model, _, training = load_model(models / "study" / variant, resolve_device(params.sample.device))
    temperatures = (cfg.temperature, cfg.temperature)
    names = tuple(n for n in VARIANT_SCORES if not untrained_inputs(n, training, temperatures))
    if not names:
        raise ConfigError(f"{models / 'study' / variant} is trained for none of the scores {', '.join(VARIANT_SCORES)}")
    with np.load(states) as saved:
        saved = dict(saved)
    scores = {**saved, **rescore_states(model, saved, model.config.block_size, names)}
    scores = {(f"{k}@{variant}" if k in names else k): v for k, v in scores.items()}
    table = refreshed_table(scores, cfg, tuple(f"{n}@{variant}" for n in names))
    write_json(results / "study" / "variants" / variant / "refreshed.json", table)
    print(json.dumps({n: round(m["auroc"], 4) for n, m in table["pooled"].items()}, indent=2))


def main(params: Params, args: argparse.Namespace) -> None:
    if args.variant:
        evaluate_variant(params, args.variant, Path(args.models_dir), Path("results"))
        return
    if args.study:
        study_detection(params, Path(args.models_dir), Path("results"))
        return
    cfg = params.evaluate_critic
    out = Path(args.out_dir)
    device = resolve_device(params.sample.device)
    model_dir = Path(args.models_dir) / "multitask"
    model, tok, training = load_model(model_dir, device)
    judge = load_judge(Path(args.models_dir) / "judge", tok, model_dir, device)
    for policy in sorted({*cfg.rollout_policies, cfg.refreshed_policy, "critic", "critic_fused"}):
        require_trained(policy, training, (cfg.temperature, cfg.temperature), str(model_dir))
    meta = load_meta(DATA_DIR)
    test = load_split(DATA_DIR, "test", meta)
    block = model.config.block_size
    windows = fixed_windows(test, cfg.num_windows, block)

    metrics: dict = {"one_step": {}, "rollout": {}}
    pooled: dict[str, list[np.ndarray]] = {}
    by_ratio = []
    for i, ratio in enumerate(tqdm(cfg.mask_ratios, desc="one-step fills", unit="ratio")):
        scores = one_step_scores(model, windows, ratio, cfg.temperature, seed=cfg.seed + i)
        summary = summarise(scores, cfg.reliability_bins)
        metrics["one_step"][f"ratio_{ratio:g}"] = summary
        by_ratio.append({"mask_ratio": ratio, **{name: round(m["auroc"], 5) for name, m in summary.items()}})
        for name, values in scores.items():
            pooled.setdefault(name, []).append(values)
    one_step = {k: np.concatenate(v) for k, v in pooled.items()}
    metrics["one_step"]["pooled"] = summarise(one_step, cfg.reliability_bins)
    metrics["added_information"] = {
        "one_step": added_information(one_step["label"], one_step["confidence"], one_step["critic"], seed=cfg.seed)
    }

    rollout_windows = windows[: cfg.rollout_windows]
    rollouts = {}
    for policy in tqdm(cfg.rollout_policies, desc="sampler states", unit="policy"):
        options = SamplerOptions(steps=cfg.rollout_steps, policy=policy, temperature=cfg.temperature,
                                 **params.sample.sampler_options())
        scores = rollout_scores(model, rollout_windows, cfg.rollout_mask_ratio, options, seed=cfg.seed)
        rollouts[policy] = scores
        metrics["rollout"][f"{policy}_policy"] = summarise(scores, cfg.reliability_bins)
        metrics["added_information"][f"{policy}_policy"] = added_information(
            scores["label"], scores["confidence"], scores["critic"], seed=cfg.seed)
        per_step = []
        for step in np.unique(scores["step"]):
            at = scores["step"] == step
            part = summarise({k: v[at] for k, v in scores.items() if k != "step"}, cfg.reliability_bins)
            per_step.append({"step": int(step), **{n: round(part[n]["auroc"], 5) for n in part}})
        write_csv(out / "plots" / f"rollout_auroc_by_step_{policy}.csv", per_step)

    metrics["refreshed"] = refreshed_detection(params, model, judge, tok, cfg.refreshed_samples, out)

    write_csv(out / "plots" / "auroc_vs_mask_ratio.csv", by_ratio)
    for kind, scores in [("one_step", one_step)] + [(f"rollout_{p}", s) for p, s in rollouts.items()]:
        plots = curves({k: v for k, v in scores.items() if k != "step"}, cfg.reliability_bins)
        for plot, per_score in plots.items():  # one file per curve: DVC plots draw one line per file
            for name, rows in per_score.items():
                write_csv(out / "plots" / plot / kind / f"{name}.csv", rows)
    write_json(out / "metrics.json", metrics)
    headline = {p: {n: round(v["auroc"], 4) for n, v in m.items()} for p, m in metrics["rollout"].items()}
    gains = {k: round(v["gain"], 4) for k, v in metrics["added_information"].items()}
    refreshed_auroc = {n: round(v["auroc"], 4) for n, v in metrics["refreshed"]["pooled"].items()}
    print(json.dumps({"refreshed_auroc": refreshed_auroc, "one_step_pooled_auroc": {n: round(v["auroc"], 4) for n, v in metrics["one_step"]["pooled"].items()},
                      "rollout_auroc": headline, "critic_added_auroc": gains}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate_critic")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--out-dir", default="results/evaluate_critic")
    parser.add_argument("--variant", default=None, help="a study variant: its scores against the study's refreshed states")
    parser.add_argument("--study", action="store_true",
                        help="the study's refreshed-target detection on study.detection_samples sampler runs")
    run_stage("evaluate_critic", main, parser)
