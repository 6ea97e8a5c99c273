"""DVC stages ``evaluate_samples`` and ``study_evaluate_samples``: sample quality and the summary.

Reads the report samples ``results/samples/<policy>.jsonl`` and tuning logs
``results/tuning/<policy>.json`` of every policy of ``sample.policies``, plus the judge's samples;
scores every text with the judge and the text metrics; interpolates each policy's frontier at each
entropy level (the test text's, and the second: :func:`remask.records.entropy_levels`) between the
report settings drawn for that level (:mod:`remask.frontier`); compares the policies by the bootstrap interval of
their difference (:mod:`remask.report`); and writes ``results/evaluate_samples/metrics.json``,
plot data and ``results/summary.md``. ``--tier study`` does the same for the study's samples
under ``results/study/``, adds the study variants' rows (``<row>@<variant>``, sampled on each
variant's model), refreshed-target scores and generator losses, the public peer's row (x-transformers'
self-critic, ``pipeline.peer``) with its training record, and the ablation arms' table to
``results/study/summary.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline._common import read_json, read_samples, run_stage, tier_results
from pipeline._rows import tier_rows
from pipeline._scoring import Scorer, report_groups
from remask.atomic import write_csv, write_json, write_text
from remask.config import TIERS, Params
from remask.records import MasksLeft
from remask.report import SummaryInputs, answers, best_training_free, compare_policies, render_summary


def main(params: Params, args: argparse.Namespace) -> None:
    params = params.for_tier(args.tier)
    cfg, scfg = params.evaluate_samples, params.sample
    results = Path(args.results_dir)
    tier_dir = tier_results(args.tier, results)
    out = tier_dir / "evaluate_samples"
    scorer = Scorer.of(Path(args.models_dir) / "judge", params)
    reference, levels = scorer.reference(scfg)
    judge_row, _ = scorer.measure([r["text"] for r in read_samples(results / "samples" / "judge.jsonl")], 1)

    tuning, files = tier_rows(params, args.tier, results)
    peer = params.study.peer.row if args.tier == "study" else None
    variants = params.study.variants if args.tier == "study" else {}
    finalists = read_json(tier_dir / "finalists" / "finalists.json", "study_finalists") if args.tier == "study" else None
    groups = report_groups(files, tier_dir / "finalists" if finalists else None, finalists)
    if finalists and peer in tuning:  # the peer's [MASK] counts of its finalist draws
        for budget, counts in MasksLeft.from_dict(finalists["masks_left"]).counts.items():
            tuning[peer].masks_left.counts.setdefault(budget, {}).update(counts)
    settings, samples = scorer.settings(groups)
    frontiers = scorer.frontiers(samples, tuning, levels, lambda row: f"the tuning log of {row} under {tier_dir}")
    records = compare_policies(samples, frontiers, tuning, levels, cfg.bootstrap_resamples, cfg.confidence_level,
                               cfg.seed + 4)
    best = {(budget, level): best_training_free(tuning, budget, level) for _, budget, level in frontiers}
    found = answers(records, frontiers, tuning, reference)

    write_json(out / "metrics.json", {
        "reference": reference,
        "judge_samples": judge_row,
        "frontier": {f.key: f.to_dict() for f in frontiers.values()},
        "levels": levels,
        "best_training_free": {f"nfe{b}/{level}": p for (b, level), p in best.items()},
        "comparisons": [r.to_dict() for r in records],
        "answers": [a.to_dict() for a in found],
        "settings": {s.key: s.to_dict() for s in settings},
        "search": {f"{row}/nfe{budget}/{level}": [c.to_dict() for c in done.levels[level].tuned.searched]
                   for row, log in tuning.items() for budget, done in log.budgets.items() for level in done.levels},
    })
    for policy, budget in sorted({(policy, budget) for policy, budget, _ in frontiers}):
        done = tuning[policy].budgets[budget]
        points = [{"draw": "tuning", "level": level, "temperature": p.temperature, "selection": p.candidate.label,
                   "char_entropy": round(p.char_entropy, 5), "judge_nll": round(p.judge_nll, 5)}
                  for level, tuned in done.levels.items() for p in tuned.tuned.pilots]
        points += [{"draw": "report", "level": s.level, "temperature": s.temperature, "selection": s.selection_label,
                    "char_entropy": round(s.metrics["char_entropy"], 5), "judge_nll": round(s.metrics["judge_nll"], 5)}
                   for s in settings if s.row == policy and s.budget == budget]
        write_csv(out / "plots" / "frontier" / f"{policy}_nfe{budget}.csv", points)

    detection = read_json(results / "evaluate_critic" / "metrics.json", "evaluate_critic")

    def label(key: str) -> str:
        return "one-step fills (pooled ratios)" if key == "one_step" else \
            f"sampler states ({key.replace('_policy', '')} rollouts)"

    refreshed = detection["refreshed"] if args.tier == "quick" else \
        read_json(tier_dir / "detection" / "refreshed.json", "study_detection")  # the study's, on more runs
    detection_view = {
        "refreshed": refreshed,
        "seed": {label("one_step"): detection["one_step"]["pooled"],
                 **{label(k): v for k, v in detection["rollout"].items()}},
        "added": {label(k): v for k, v in detection["added_information"].items()},
    }
    for variant in variants:  # every variant's scores beside the quick tier's, on the same labelled states
        table = read_json(tier_dir / "variants" / variant / "refreshed.json", f"study_evaluate_critic@{variant}")
        for state, block in table["states"].items():
            detection_view["refreshed"]["states"][state].update(block)
        detection_view["refreshed"]["pooled"].update(table["pooled"])
    losses = {v: read_json(results / "train" / v / "metrics.json", f"train_{v}")["val"]["gen_loss"]
              for v in ("multitask", "generator_only")}
    losses |= {v: read_json(tier_dir / "train" / v / "metrics.json", f"study_train@{v}")["val"]["gen_loss"]
               for v in variants}
    ablation = [read_json(results / "ablation" / arm / "metrics.json", f"ablate_measure@{arm}")
                for arm in (params.ablation.arms if args.tier == "study" else ())]
    stage = "`evaluate_samples` stage of `dvc repro`" if args.tier == "quick" else \
        "`study_evaluate_samples` stage of `make study`"
    peer_record = {"training": read_json(tier_dir / "train" / "peer" / "metrics.json", "study_peer_train"),
                   "tuning": tuning[peer]} if peer else None
    summary = render_summary(SummaryInputs(reference, judge_row, frontiers, records, best, settings, detection_view,
                                           losses, scfg.tuning_seed, scfg.seed, tuning, levels, found, ablation, stage,
                                           peer_record, finalists))
    write_text(tier_dir / "summary.md", summary)
    print(summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate_samples")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--tier", choices=TIERS, default="quick", help="quick (sample) or study (study.sample)")
    run_stage("evaluate_samples", main, parser)
