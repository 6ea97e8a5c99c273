"""DVC stage ``study_peer_sample``: the public peer's samples, tuned like every row of the study.

Tunes the peer's start temperature and critic-noise scale (a selection rule's noise temperature;
``topk``: none) on the tuning draw with the same search as every row of ``study.sample`` (within
its own ``study.peer.temperature_range``: its start temperature saturates near 4.25 bits), then
draws the report samples with its own ``generate()`` at each NFE budget (two passes per step,
counted by :func:`remask.peer.peer_generate`), as the row ``study.peer.row`` beside the study's
others: ``results/study/samples/<row>.jsonl`` and ``results/study/tuning/<row>.json``. A
``[MASK]`` its sampler leaves in a text is shown to the judge as ``data.unknown_char`` and counted
per setting in the tuning log (``masks_left``).

``--our-sampler`` (the stage ``study_sample_peer_model``) draws the rows of ``study.peer.rows`` from
the peer's trained generator with *our* sampler and search, as ``<row>@peer`` under
``results/study/variants/peer/``, so that the summary separates its model from its sampler.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline._common import DATA_DIR, PEER, PEER_DIR, run_stage, samples_dir, tier_results, write_rows
from pipeline._sampling import sample_rows
from remask.atomic import write_json
from remask.checkpoint import load_judge
from remask.config import Params
from remask.peer import VERSION, load_peer, load_peer_model, peer_draw_at
from remask.records import MasksLeft, entropy_levels
from remask.runtime import resolve_device
from remask.tuning import RowPlan, Search, target_entropy, tune_row


def our_sampler(params: Params, models: Path) -> None:
    """``--our-sampler``: the rows of ``study.peer.rows`` drawn from the peer's trained generator by
    our sampler (``<row>@peer``), searched like every row, into ``results/study/variants/peer/``."""
    samples, logs = sample_rows(params.for_tier("study"), params.study.peer.rows, models / PEER_DIR, models / "judge",
                                PEER, load_peer_model)
    out = tier_results("study") / "variants" / PEER
    write_json(out / "tuning.json", {name: log.to_dict() for name, log in logs.items()})
    write_rows(samples, out / "samples.jsonl")


def main(params: Params, args: argparse.Namespace) -> None:
    if args.our_sampler:
        our_sampler(params, Path(args.models_dir))
        return
    study = params.for_tier("study")
    peer, model_dir = params.study.peer, Path(args.models_dir) / PEER_DIR
    cfg = study.sample
    device = resolve_device(cfg.device)
    wrapper, tok, _ = load_peer(model_dir, device)
    judge = load_judge(Path(args.models_dir) / "judge", tok, model_dir, device)
    levels = entropy_levels(target_entropy(DATA_DIR, tok, cfg.num_samples, cfg.length), cfg.tuning)
    search = Search(judge, tok, levels, cfg, cfg.seed,
                    lambda m: print(m, flush=True))
    fields = {"runs": f"x-transformers=={VERSION} generate()", "kind": "peer", "committed_budget": None}
    plan = RowPlan(peer.row, fields, True, tuple(cfg.nfe_budgets), cfg.num_samples, cfg.tuning.num_samples,
                   str(model_dir), draws=None,  # its own sampler: annealed to 0, filter_thres; none of our knobs
                   search=cfg.tuning.with_(temperature_range=list(peer.temperature_range)))  # its start temperature saturates where ours does not
    masks_left = MasksLeft()
    samples, log = tune_row(plan, peer_draw_at(wrapper, tok, cfg, peer.filter_thres, params.data.unknown_char,
                                               masks_left), search)
    log.extra = {"filter_thres": peer.filter_thres, "mask_stand_in": params.data.unknown_char}
    log.masks_left = masks_left
    write_json(tier_results("study") / "tuning" / f"{peer.row}.json", log.to_dict())
    write_rows(samples, samples_dir("study") / f"{peer.row}.jsonl")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.peer_sample")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--our-sampler", action="store_true",
                        help="our sampler on the peer's generator: the rows of study.peer.rows, as <row>@peer")
    run_stage("peer_sample", main, parser)
