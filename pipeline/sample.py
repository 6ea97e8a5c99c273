"""DVC stages ``sample@<policy>``, ``study_sample@<policy>`` and ``sample_judge``: draw the samples.

``sample@<policy>`` writes ``results/samples/<policy>.jsonl``: for every NFE budget (at
temperature 1) and, for swept policies, every temperature at the sweep budgets, ``num_samples``
samples of ``length`` characters from ``models/multitask``. ``--tier study`` draws the study's grid
(``study.sample``) into ``results/study/samples/``. ``sample_judge`` writes
``results/samples/judge.jsonl``: unconditional samples of the causal judge, the reference row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline._common import run_stage, samples_dir
from remask.atomic import write_text
from remask.checkpoint import load_model
from remask.config import TIERS, ConfigError, Params
from remask.policies import POLICIES
from remask.judge import judge_generate
from remask.runtime import resolve_device
from remask.sampling import compute_matched_grid, diffusion_generate



def sample_policy(params: Params, policy: str, model_dir: Path, out: Path) -> None:
    cfg = params.sample
    model, tok, _ = load_model(model_dir, resolve_device(cfg.device))
    if policy not in cfg.policies:
        raise ConfigError(f"--policy {policy!r} is not in this tier's policies: {', '.join(cfg.policies)}")
    grid = compute_matched_grid(policy, cfg.nfe_budgets, cfg.sweep_nfe, cfg.temperatures, cfg.policies[policy].sweep)
    rows = []
    for number, setting in enumerate(grid, 1):
        print(f"[{policy}] setting {number}/{len(grid)}: NFE budget {setting.nfe_budget}, {setting.steps} steps, "
              f"temperature {setting.temperature:g}", flush=True)
        result = diffusion_generate(
            model, cfg.num_samples, cfg.length, setting.steps, policy=policy, temperature=setting.temperature,
            seed=cfg.seed, batch_size=cfg.batch_size, progress=True, **cfg.sampler_options(),
        )
        rows += [
            {"policy": policy, "nfe_budget": setting.nfe_budget, "steps": setting.steps, "nfe": result.nfe,
             "temperature": setting.temperature, "seed": cfg.seed, "index": i, "text": tok.decode(ids.tolist())}
            for i, ids in enumerate(result.tokens)
        ]
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
        sample_policy(params.for_tier(args.tier), args.policy, Path(args.models_dir) / "multitask", out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample")
    parser.add_argument("--policy", required=True, help="a policy name, or 'judge'")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--tier", choices=TIERS, default="quick", help="whose grid: quick (sample) or study (study.sample)")
    parser.add_argument("--out-dir", default=None, help="default: results/samples, or results/study/samples")
    run_stage("sample", main, parser)
