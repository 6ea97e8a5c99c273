"""DVC stage ``study_peer_sample``: the public peer's samples, tuned like every row of the study.

Tunes the peer's start temperature and critic-noise scale (a selection rule's noise temperature;
``topk``: none) on the tuning draw with the same search as every row of ``study.sample``, then
draws the report samples with its own ``generate()`` at each NFE budget (two passes per step,
counted by :func:`remask.peer.peer_generate`), as the row ``study.peer.row`` beside the study's
others: ``results/study/samples/<row>.jsonl`` and ``results/study/tuning/<row>.json``. A
``[MASK]`` its sampler leaves in a text is shown to the judge as ``data.unknown_char`` and counted
per setting in the tuning log (``masks_left``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline._common import PEER_DIR, run_stage, samples_dir, tier_results
from pipeline.sample import draw_row, judge_and_target, write_rows
from remask.atomic import write_json
from remask.config import Params, PolicySampling
from remask.peer import VERSION, load_peer, peer_draw, peer_steps_for_nfe
from remask.runtime import resolve_device
from remask.tuning import Draw


def main(params: Params, args: argparse.Namespace) -> None:
    study = params.for_tier("study")
    cfg, peer, model_dir = study.sample, params.study.peer, Path(args.models_dir) / PEER_DIR
    device = resolve_device(cfg.device)
    wrapper, tok, _ = load_peer(model_dir, device)
    judge, target = judge_and_target(study, tok, Path(args.models_dir) / "judge", model_dir, device)

    masks_left: dict[str, dict[str, int]] = {}

    def draw_at(budget: int) -> tuple[Draw, int]:
        steps = peer_steps_for_nfe(budget)
        masks_left[str(budget)] = {}
        return peer_draw(wrapper, tok, steps, cfg, peer.filter_thres, params.data.unknown_char,
                         masks_left[str(budget)]), steps

    fields = {"runs": f"x-transformers=={VERSION} generate()", "kind": "peer", "committed_budget": None}
    samples, log = draw_row(peer.row, fields, draw_at, True, judge, tok, target, cfg, PolicySampling(), model_dir)
    write_json(tier_results("study") / "tuning" / f"{peer.row}.json",
               {**log, "filter_thres": peer.filter_thres, "mask_stand_in": params.data.unknown_char,
                "masks_left": masks_left})
    write_rows(samples, samples_dir("study") / f"{peer.row}.jsonl")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.peer_sample")
    parser.add_argument("--models-dir", default="models")
    run_stage("peer_sample", main, parser)
