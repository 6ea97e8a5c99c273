"""DVC stage ``tokenize``: corpus -> data/prepared/{train,val,test}.bin, meta.json, stats.json.

(Named ``tokenize_corpus`` so that it never shadows Python's standard ``tokenize`` module.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline._common import DATA_DIR, run_stage
from remask.config import Params
from remask.data import load_corpus, prepare


def main(params: Params, args: argparse.Namespace) -> None:
    docs, digest = load_corpus(params.data.source, params.data.sha256)
    stats = prepare(docs, digest, params.data, Path(args.out))
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipeline.tokenize_corpus")
    parser.add_argument("--out", default=str(DATA_DIR), help="output folder (default: data/prepared)")
    run_stage("tokenize", main, parser)
