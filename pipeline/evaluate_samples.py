"""DVC stages ``evaluate_samples`` and ``study_evaluate_samples``: sample quality and the summary.

Reads every ``results/samples/*.jsonl`` named by ``sample.policies`` plus the judge's samples,
scores them with the judge and the text metrics (with bootstrap intervals), writes
``results/evaluate_samples/metrics.json``, plot data, and ``results/summary.md`` with its verdict.
``--tier study`` does the same for the study's samples under ``results/study/`` and adds the
ablation arms' table to ``results/study/summary.md``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from pipeline._common import run_stage, samples_dir, tier_results
from remask.atomic import write_csv, write_json, write_text
from remask.checkpoint import load_model
from remask.config import TIERS, ConfigError, Params
from remask.data import fixed_windows, load_meta, load_split, split_text, words
from remask.judge import judge_nll_bits
from remask.metrics import text_metrics
from remask.report import render_summary
from remask.runtime import resolve_device

DATA_DIR = Path("data/prepared")
BASELINE = "confidence"


def read_samples(path: Path) -> list[dict]:
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run the sample stage for it first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(params: Params, args: argparse.Namespace) -> None:
    params = params.for_tier(args.tier)
    cfg, scfg = params.evaluate_samples, params.sample
    results = Path(args.results_dir)
    tier_dir = tier_results(args.tier, results)
    out = tier_dir / "evaluate_samples"
    judge, tok, _ = load_model(Path(args.models_dir) / "judge", resolve_device(scfg.device))
    meta = load_meta(DATA_DIR)
    vocabulary = set(words(split_text(DATA_DIR, "train")))
    test = load_split(DATA_DIR, "test", meta)
    reference_texts = [tok.decode(w.tolist()) for w in fixed_windows(test, scfg.num_samples, scfg.length)]

    def measure(texts: list[str], offset: int) -> dict:
        nll = judge_nll_bits(judge, tok, texts)
        return text_metrics(texts, vocabulary, nll, cfg.bootstrap_resamples, cfg.confidence_level, cfg.seed + offset)

    reference = measure(reference_texts, 0)
    judge_row = measure([r["text"] for r in read_samples(results / "samples" / "judge.jsonl")], 1)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for policy in scfg.policies:
        for row in read_samples(samples_dir(args.tier, results) / f"{policy}.jsonl"):
            groups[(row["policy"], row["nfe_budget"], row["temperature"])].append(row)
    settings = []
    for (policy, budget, temperature), rows in tqdm(sorted(groups.items()), desc="evaluate samples", unit="setting"):
        metrics = measure([r["text"] for r in rows], 2)
        settings.append({"policy": policy, "nfe_budget": budget, "steps": rows[0]["steps"], "nfe": rows[0]["nfe"],
                         "temperature": temperature, **metrics})

    write_json(out / "metrics.json", {
        "reference": reference,
        "judge_samples": judge_row,
        "settings": {f"{s['policy']}/nfe{s['nfe_budget']}/t{s['temperature']:g}": s for s in settings},
    })
    for policy in scfg.policies:
        at_one = sorted((s for s in settings if s["policy"] == policy and s["temperature"] == 1.0),
                        key=lambda s: s["nfe_budget"])
        write_csv(out / "plots" / "nfe" / f"{policy}.csv", [_plot_row(s, "nfe_budget") for s in at_one])
        for budget in scfg.sweep_nfe:
            sweep = sorted((s for s in settings if s["policy"] == policy and s["nfe_budget"] == budget),
                           key=lambda s: s["temperature"])
            if len(sweep) > 1:
                write_csv(out / "plots" / "frontier" / f"{policy}_nfe{budget}.csv", [_plot_row(s, "temperature") for s in sweep])

    detection_path = results / "evaluate_critic" / "metrics.json"
    detection = added = None
    if detection_path.is_file():
        raw = json.loads(detection_path.read_text())

        def label(key: str) -> str:
            return "one-step fills (pooled ratios)" if key == "one_step" else \
                f"sampler states ({key.replace('_policy', '')} rollouts)"

        detection = {label("one_step"): raw["one_step"]["pooled"], **{label(k): v for k, v in raw["rollout"].items()}}
        added = {label(k): v for k, v in raw["added_information"].items()}
    losses = {}
    for variant in ("multitask", "generator_only"):
        path = results / "train" / variant / "metrics.json"
        if path.is_file():
            losses[variant] = json.loads(path.read_text())["val"]["gen_loss"]
    ablation = []
    for arm in params.ablation.arms if args.tier == "study" else ():
        path = results / "ablation" / arm / "metrics.json"
        if not path.is_file():
            raise ConfigError(f"{path}: not found; run the ablate_measure@{arm} stage first")
        ablation.append(json.loads(path.read_text()))
    challengers = [p for p in scfg.policies if p.startswith("critic")]
    stage = "`evaluate_samples` stage of `dvc repro`" if args.tier == "quick" else \
        "`study_evaluate_samples` stage of `make study`"
    summary = render_summary(reference, judge_row, settings, scfg.sweep_nfe, challengers, BASELINE,
                             cfg.entropy_tolerance, detection, losses, ablation, added, generated_by=stage)
    write_text(tier_dir / "summary.md", summary)
    print(summary)


def _plot_row(s: dict, x: str) -> dict:
    return {x: s[x], "judge_nll": round(s["judge_nll"], 5), "judge_nll_low": round(s["judge_nll_ci"][0], 5),
            "judge_nll_high": round(s["judge_nll_ci"][1], 5), "char_entropy": round(s["char_entropy"], 5),
            "word_validity": round(s["word_validity"], 5), "rep_4": round(s["rep_4"], 5)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate_samples")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--tier", choices=TIERS, default="quick", help="quick (sample) or study (study.sample)")
    run_stage("evaluate_samples", main, parser)
