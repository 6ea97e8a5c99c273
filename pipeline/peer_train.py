"""DVC stage ``study_peer_train``: the public peer, trained with its own loss on our run's settings.

Trains lucidrains' x-transformers self-critic (:mod:`remask.peer`, :mod:`remask.peer_training`)
at our model's size on the train windows, steps, batch and optimiser of ``models/multitask`` into
``models/study/peer/``, and writes its running losses, its parameter count beside ours and our
validation of it to ``results/study/train/peer/metrics.json``. Interrupted, it resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline._common import DATA_DIR, PEER_DIR, run_stage, tier_results
from remask.atomic import write_json
from remask.config import Params
from remask.peer_training import train_peer

def main(params: Params, args: argparse.Namespace) -> None:
    metrics = train_peer(params.model, params.study.peer, params.train, params.critic, DATA_DIR,
                         Path(args.models_dir) / PEER_DIR, progress=True)
    write_json(tier_results("study") / "train" / "peer" / "metrics.json", metrics)
    print(f"[peer] {metrics['parameters']:,} parameters (ours {metrics['parameters_ours']:,}); "
          f"validation generator loss {metrics['val']['gen_loss']:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.peer_train")
    parser.add_argument("--models-dir", default="models")
    run_stage("peer_train", main, parser)
