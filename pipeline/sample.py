"""DVC stages ``sample@<policy>``, ``study_sample@<policy>`` and ``sample_judge``: draw the samples.

``sample@<policy>`` tunes the policy's knobs on the tuning draw (``sample.tuning_seed``) at every
NFE budget (:mod:`remask.tuning`: the temperature that reaches the test text's entropy, for each
selection rule, and the best rule by judge NLL there), then draws the report samples on
``sample.seed`` at two temperatures around the tuned one. It writes the report samples to
``results/samples/<policy>.jsonl`` and every tuning pilot to ``results/tuning/<policy>.json``.
``--tier study`` does the same on the study's grid (``study.sample``) under ``results/study/``.
``sample_judge`` writes ``results/samples/judge.jsonl``: unconditional samples of the causal
judge, the reference row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline._common import run_stage, samples_dir, tier_results
from remask.atomic import write_json, write_text
from remask.checkpoint import load_model
from remask.config import TIERS, ConfigError, Params
from remask.data import reference_texts
from remask.judge import judge_generate
from remask.metrics import char_entropy
from remask.policies import POLICIES, require_trained
from remask.runtime import resolve_device
from remask.tuning import tune_and_draw

DATA_DIR = Path("data/prepared")


def sample_policy(params: Params, policy: str, models_dir: Path, out: Path, tuning_out: Path) -> None:
    cfg = params.sample
    if policy not in cfg.policies:
        raise ConfigError(f"--policy {policy!r} is not in this tier's policies: {', '.join(cfg.policies)}")
    device = resolve_device(cfg.device)
    model, tok, training = load_model(models_dir / "multitask", device)
    require_trained(policy, training, tuple(cfg.tuning.temperature_range), str(models_dir / "multitask"))
    judge, judge_tok, _ = load_model(models_dir / "judge", device)
    if judge_tok.chars != tok.chars:
        raise ConfigError(f"{models_dir / 'judge'} and {models_dir / 'multitask'} use different vocabularies")
    target = char_entropy(reference_texts(DATA_DIR, tok, cfg.num_samples, cfg.length))
    rows, log = [], {"policy": policy, "target_entropy": target, "tuning_seed": cfg.tuning_seed,
                     "report_seed": cfg.seed, "budgets": {}}
    for budget in cfg.budgets(policy):
        tuned, drawn = tune_and_draw(model, judge, tok, policy, budget, target, cfg, cfg.num_samples_of(policy),
                                     cfg.tuning_samples_of(policy), cfg.seed, log=lambda m: print(m, flush=True))
        log["budgets"][str(budget)] = {"steps": drawn[0]["steps"], "nfe": drawn[0]["nfe"], **tuned.to_dict(),
                                       "report_temperatures": sorted({r["temperature"] for r in drawn})}
        rows += drawn
    write_json(tuning_out, log)
    write_text(out, "".join(json.dumps(r) + "\n" for r in rows))


def sample_judge(params: Params, model_dir: Path, out: Path) -> None:
    cfg = params.sample
    model, tok, _ = load_model(model_dir, resolve_device(cfg.device))
    texts = judge_generate(model, tok, cfg.num_samples, cfg.length, temperature=1.0, seed=cfg.seed, progress=True)
    rows = [{"policy": "judge", "nfe_budget": cfg.length, "steps": cfg.length, "nfe": cfg.length, "temperature": 1.0,
             "seed": cfg.seed, "index": i, "text": t} for i, t in enumerate(texts)]
    write_text(out, "".join(json.dumps(r) + "\n" for r in rows))


def main(params: Params, args: argparse.Namespace) -> None:
    if args.policy != "judge" and args.policy not in POLICIES:
        raise ConfigError(f"--policy {args.policy!r}: valid choices are judge, {', '.join(POLICIES)}")
    out_dir = Path(args.out_dir) if args.out_dir else samples_dir(args.tier)
    out = out_dir / f"{args.policy}.jsonl"
    if args.policy == "judge":
        sample_judge(params, Path(args.models_dir) / "judge", out)
    else:
        sample_policy(params.for_tier(args.tier), args.policy, Path(args.models_dir), out,
                      tier_results(args.tier) / "tuning" / f"{args.policy}.json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample")
    parser.add_argument("--policy", required=True, help="a policy name, or 'judge'")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--tier", choices=TIERS, default="quick", help="whose grid: quick (sample) or study (study.sample)")
    parser.add_argument("--out-dir", default=None, help="default: results/samples, or results/study/samples")
    run_stage("sample", main, parser)
