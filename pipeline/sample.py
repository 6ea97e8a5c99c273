"""DVC stages ``sample@<policy>``, ``study_sample@<policy>`` and ``sample_judge``: draw the samples.

``sample@<policy>`` tunes the policy's knobs on the tuning draw (``sample.tuning_seed``) at every
NFE budget (:mod:`remask.tuning`: the temperature that reaches the test text's entropy, for each
selection rule, and the best rule by judge NLL there), then draws the report samples on
``sample.seed`` at two temperatures around the tuned one. It writes the report samples to
``results/samples/<policy>.jsonl`` and every tuning pilot to ``results/tuning/<policy>.json``.
``--tier study`` does the same on the study's grid (``study.sample``) under ``results/study/``;
``--variant <name>`` samples every row of a study variant (``study.variants``) on its own model
``models/study/<name>`` into ``results/study/variants/<name>/``, rows named ``<row>@<name>``.
``sample_judge`` writes ``results/samples/judge.jsonl``: unconditional samples of the causal
judge, the reference row. :func:`draw_row` (one row at each budget around any sampler) is shared
with ``pipeline.peer_sample``, so the public peer's row gets the very same search.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline._common import run_stage, samples_dir, tier_results
from remask.atomic import write_json, write_text
from remask.checkpoint import load_model
from remask.config import TIERS, ConfigError, Params, PolicySampling, SampleSection
from remask.data import CharTokenizer, reference_texts
from remask.judge import judge_generate
from remask.metrics import char_entropy
from remask.model import DiffusionTransformer
from remask.policies import get_policy, require_trained
from remask.runtime import resolve_device
from remask.sampling import steps_for_nfe
from remask.tuning import Draw, policy_draw, tune_and_draw_with

DATA_DIR = Path("data/prepared")


def sample_rows(params: Params, rows: dict[str, PolicySampling], model_dir: Path, judge_dir: Path,
                label: str = "{row}") -> tuple[list[dict], dict[str, dict]]:
    """Tune and draw every row of ``rows`` on the model in ``model_dir``: ``(samples, tuning logs)``,
    rows named ``label.format(row=...)``. Each row's policy must be one the model was trained for."""
    cfg = params.sample
    device = resolve_device(cfg.device)
    model, tok, training = load_model(model_dir, device)
    for row, spec in rows.items():
        require_trained(spec.runs(row), training, tuple(cfg.tuning.temperature_range), str(model_dir))
        if spec.committed_budget is not None and get_policy(spec.runs(row)).candidates != "all":
            raise ConfigError(f"policies.{row}.committed_budget: policy {spec.runs(row)!r} re-masks only the "
                              "tokens it just filled; a committed budget needs one whose candidates are all tokens")
    judge, target = judge_and_target(params, tok, judge_dir, model_dir, device)
    samples, logs = [], {}
    for row, spec in rows.items():
        policy = spec.runs(row)

        def draw_at(budget: int, policy: str = policy, spec: PolicySampling = spec) -> tuple[Draw, int]:
            steps = steps_for_nfe(policy, budget)
            return policy_draw(model, tok, policy, steps, cfg, spec.committed_budget), steps

        drawn, logs[label.format(row=row)] = draw_row(
            label.format(row=row), {"runs": policy, "committed_budget": spec.committed_budget}, draw_at,
            get_policy(policy).ranks, judge, tok, target, cfg, spec, model_dir)
        samples += drawn
    return samples, logs


def judge_and_target(params: Params, tok: CharTokenizer, judge_dir: Path, model_dir: Path,
                     device: torch.device) -> tuple[DiffusionTransformer, float]:
    """The judge (which must read the model's vocabulary) and the test text's entropy, the target."""
    judge, judge_tok, _ = load_model(judge_dir, device)
    if judge_tok.chars != tok.chars:
        raise ConfigError(f"{judge_dir} and {model_dir} use different vocabularies")
    return judge, char_entropy(reference_texts(DATA_DIR, tok, params.sample.num_samples, params.sample.length))


def draw_row(name: str, fields: dict, draw_at: Callable[[int], tuple[Draw, int]], ranks: bool,
             judge: DiffusionTransformer, tok: CharTokenizer, target: float, cfg: SampleSection, spec: PolicySampling,
             model_dir: Path) -> tuple[list[dict], dict]:
    """One row of the grid at each of its NFE budgets: the search of :mod:`remask.tuning` around
    ``draw_at(budget) -> (draw, steps)``, then the report draw. ``(samples, tuning log)``."""
    log = {"policy": name, **fields, "model": str(model_dir), "target_entropy": target,
           "tuning_seed": cfg.tuning_seed, "report_seed": cfg.seed, "budgets": {}}
    samples = []
    for budget in spec.nfe_budgets or cfg.nfe_budgets:
        draw, steps = draw_at(budget)
        tuned, drawn = tune_and_draw_with(draw, ranks, judge, tok, budget, steps, target, cfg,
                                          spec.num_samples or cfg.num_samples,
                                          spec.tuning_samples or cfg.tuning.num_samples, cfg.seed,
                                          lambda m: print(m, flush=True), name, fields)
        log["budgets"][str(budget)] = {"steps": drawn[0]["steps"], "nfe": drawn[0]["nfe"], **tuned.to_dict(),
                                       "report_temperatures": sorted({r["temperature"] for r in drawn})}
        samples += drawn
    return samples, log


def write_rows(samples: list[dict], out: Path) -> None:
    write_text(out, "".join(json.dumps(r) + "\n" for r in samples))


def sample_judge(params: Params, model_dir: Path, out: Path) -> None:
    cfg = params.sample
    model, tok, _ = load_model(model_dir, resolve_device(cfg.device))
    texts = judge_generate(model, tok, cfg.num_samples, cfg.length, temperature=1.0, seed=cfg.seed, progress=True)
    rows = [{"policy": "judge", "nfe_budget": cfg.length, "steps": cfg.length, "nfe": cfg.length, "temperature": 1.0,
             "seed": cfg.seed, "index": i, "text": t} for i, t in enumerate(texts)]
    write_text(out, "".join(json.dumps(r) + "\n" for r in rows))


def main(params: Params, args: argparse.Namespace) -> None:
    models = Path(args.models_dir)
    if args.variant:
        variants = params.study.variants
        if args.variant not in variants:
            raise ConfigError(f"--variant {args.variant!r} is not in study.variants: {', '.join(variants)}")
        samples, logs = sample_rows(params.for_tier("study"), variants[args.variant].policies,
                                    models / "study" / args.variant, models / "judge", label="{row}@" + args.variant)
        out = tier_results("study") / "variants" / args.variant
        write_json(out / "tuning.json", logs)
        write_rows(samples, out / "samples.jsonl")
        return
    if args.policy is None:
        raise ConfigError("name --policy (a row of the tier's grid, or judge) or --variant")
    out_dir = Path(args.out_dir) if args.out_dir else samples_dir(args.tier)
    if args.policy == "judge":
        sample_judge(params, models / "judge", out_dir / "judge.jsonl")
        return
    grid = params.for_tier(args.tier)
    if args.policy not in grid.sample.policies:
        raise ConfigError(f"--policy {args.policy!r} is not in this tier's policies: judge, "
                          f"{', '.join(grid.sample.policies)}")
    samples, logs = sample_rows(grid, {args.policy: grid.sample.policies[args.policy]}, models / "multitask",
                                models / "judge")
    write_json(tier_results(args.tier) / "tuning" / f"{args.policy}.json", logs[args.policy])
    write_rows(samples, out_dir / f"{args.policy}.jsonl")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample")
    parser.add_argument("--policy", default=None, help="a row of the tier's grid (a policy name), or 'judge'")
    parser.add_argument("--variant", default=None, help="sample every row of this study variant on its model")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--tier", choices=TIERS, default="quick", help="whose grid: quick (sample) or study (study.sample)")
    parser.add_argument("--out-dir", default=None, help="default: results/samples, or results/study/samples")
    run_stage("sample", main, parser)
