"""DVC stage ``study_finalists``: the study's finalists drawn again on more texts, so that their
differences decide.

An interval of a difference shrinks about as 1/sqrt(n): at ``sample.num_samples`` (128) texts per
report setting a judge-NLL difference is known to about +-0.1 bits. The finalists, per NFE budget
and entropy level (:func:`remask.report.finalist_rows`): each model's training-free baselines
(``confidence``, ``remdm_conf`` with a committed budget), the oracle ceiling, each model's best
learned row chosen on the *tuning* draw, and the public peer. Each is drawn again on the report seed
at its report temperatures with its tuned knobs, ``study.finalists.num_samples`` texts each (the
oracle ceiling, a pass per position per step: ``oracle_num_samples``; a finalist whose report draw
holds as many already is measured on it). The
sampler spends the seed's stream in the same order whatever the number of texts (in batches of
``sample.batch_size``), so the first ``sample.num_samples`` texts are the row's report samples and
the rest are new; ``study_evaluate_samples`` measures a finalist on these instead. Writes
``results/study/finalists/samples.jsonl`` and ``finalists.json`` (the rows per budget and level,
the number of texts of each row drawn again, and the peer's ``[MASK]`` counts).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline._common import PEER, PEER_DIR, run_stage, tier_results, write_rows
from pipeline._rows import tier_rows
from remask.atomic import write_json
from remask.checkpoint import load_model
from remask.config import ConfigError, Params, SampleSection
from remask.records import LEVELS, MasksLeft, TuningLog
from remask.report import finalist_rows, kind_of
from remask.runtime import resolve_device
from remask.tuning import DrawAt, report_rows, sampler_draw_at


def draw_at_for(log: TuningLog, params: Params, cfg: SampleSection, masks_left: MasksLeft, models: Path) -> DrawAt:
    """The sampler that drew ``log``'s row: the peer's own ``generate()``, or ours on the row's model
    (the peer's generator for a ``<row>@peer``)."""
    device = resolve_device(cfg.device)
    if kind_of(log) == "peer":
        from remask.peer import load_peer, peer_draw_at  # the optional `peer` extra, only for its row

        wrapper, tok, _ = load_peer(models / PEER_DIR, device)
        return peer_draw_at(wrapper, tok, cfg, params.study.peer.filter_thres, params.data.unknown_char, masks_left)
    if log.variant == PEER:  # our sampler on the peer's generator
        from remask.peer import load_peer_model

        model, tok, _ = load_peer_model(models / PEER_DIR, device)
    else:
        model, tok, _ = load_model(Path(log.model), device)
    return sampler_draw_at(model, tok, cfg, log.runs)


def texts_for(row: str, log: TuningLog, study: Params) -> tuple[int, int]:
    """``(texts to draw, texts its report draw holds)`` per report setting of a finalist."""
    finalists, grid = study.study.finalists, study.sample
    grids = {None: grid.policies, PEER: study.study.peer.rows,
             **{variant: spec.policies for variant, spec in study.study.variants.items()}}
    spec = grids.get(log.variant, {}).get(row.split("@")[0])  # the peer's own row has none: the grid's count
    report = (spec.num_samples if spec else None) or grid.num_samples
    return (finalists.oracle_num_samples if kind_of(log) == "oracle" else finalists.num_samples), report


def main(params: Params, args: argparse.Namespace) -> None:
    study = params.for_tier("study")
    cfg = study.sample
    if params.study.finalists.num_samples < cfg.num_samples or cfg.num_samples % cfg.batch_size:
        raise ConfigError(f"study.finalists.num_samples ({params.study.finalists.num_samples}) must be at least "
                          f"sample.num_samples ({cfg.num_samples}), which must be a multiple of sample.batch_size "
                          f"({cfg.batch_size}), so that the first sample.num_samples texts are the report samples")
    tuning, _ = tier_rows(study, "study")
    budgets = sorted({b for log in tuning.values() for b in log.budgets})
    chosen = {budget: {level: finalist_rows(tuning, budget, level) for level in LEVELS} for budget in budgets}
    masks_left, samples, texts = MasksLeft(), [], {}
    for row in sorted({r for at in chosen.values() for rows in at.values() for r in rows}):
        log = tuning[row]
        n, report = texts_for(row, log, study)
        if n <= report:  # its report draw holds as many already
            print(f"[finalists] {row}: measured on its report draw's {report} texts", flush=True)
            continue
        texts[row] = n
        draw_at = draw_at_for(log, params, cfg, masks_left, Path(args.models_dir))
        for budget in budgets:
            for level in (level for level in LEVELS if row in chosen[budget][level]):
                draw, steps = draw_at(budget)
                tuned = log.budgets[budget].levels[level]
                for temperature in tuned.report_temperatures:
                    drawn, nfe = draw(temperature, tuned.tuned.candidate, log.report_seed, n)
                    samples += report_rows(row, log.fields, drawn, nfe_budget=budget, level=level, steps=steps,
                                           nfe=nfe, temperature=temperature, **tuned.tuned.candidate.fields(),
                                           seed=log.report_seed)
                print(f"[finalists] {row} NFE {budget}, {level} level: {n} texts at each of "
                      f"{len(tuned.report_temperatures)} temperatures", flush=True)
    out = tier_results("study") / "finalists"
    write_rows(samples, out / "samples.jsonl")
    write_json(out / "finalists.json", {"rows": {str(b): at for b, at in chosen.items()}, "texts": texts,
                                        "masks_left": masks_left.to_dict()})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.finalists")
    parser.add_argument("--models-dir", default="models")
    run_stage("finalists", main, parser)
