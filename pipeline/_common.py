"""What every stage entry point shares: reading params and turning known errors into one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from remask.checkpoint import CheckpointError
from remask.config import ConfigError, Params, load_params
from remask.data import DataError

KNOWN_ERRORS = (ConfigError, DataError, CheckpointError)


def run_stage(name: str, body: Callable[[Params, argparse.Namespace], None], parser: argparse.ArgumentParser | None = None) -> None:
    """Parse ``--params``, validate them, run ``body``; a known error exits 2 with one line."""
    parser = parser or argparse.ArgumentParser(prog=f"python -m pipeline.{name}")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    try:
        body(load_params(args.params), args)
    except KNOWN_ERRORS as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
