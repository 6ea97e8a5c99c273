"""What every stage entry point shares: reading params, turning known errors into one line, where
the prepared data and each tier's results live, and writing sample rows. No stage imports another."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from remask.atomic import write_text
from remask.config import Params, load_params
from remask.errors import CheckpointError, ConfigError, DataError

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


DATA_DIR = Path("data/prepared")  # the tokenize stage's output, every later stage's input
PEER_DIR = Path("study") / "peer"  # the public peer's model, under models/
PEER = "peer"  # the study "variant" name of rows our sampler draws from the peer's generator (<row>@peer)
SCALE_RESULTS = Path("results/scale")  # the scale axis's results (its models: models/scale, remask.train)
SCALE_SAMPLES = SCALE_RESULTS / "samples"  # <point>/<model or CEILING>/{samples.jsonl,tuning.json}
CEILING = "ceiling"  # where a point's ceiling rows (scale.ceiling, drawn by scale_ceiling@<point>) are written


def scale_variant(model: str, point: str) -> str:
    """The "variant" a scale axis row was sampled on: ``<model>-<point>`` (rows ``<row>@<model>-<point>``)."""
    return f"{model}-{point}"


def tier_results(tier: str, results: Path = Path("results")) -> Path:
    """Where a tier's sample results go: ``results`` (quick) or ``results/study``."""
    return results if tier == "quick" else results / "study"


def samples_dir(tier: str, results: Path = Path("results")) -> Path:
    """Where a tier's samples go: ``results/samples`` (quick) or ``results/study/samples``."""
    return tier_results(tier, results) / "samples"


def read_json(path: Path, stage: str) -> dict:
    """A stage's JSON output; missing, an error naming the stage that writes it."""
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run the {stage} stage first")
    return json.loads(path.read_text(encoding="utf-8"))


def read_samples(path: Path) -> list[dict]:
    """Samples as the sampling stages write them (JSON lines)."""
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run the sample stage for it first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(rows: list[dict], out: Path) -> None:
    """Samples as JSON lines, one row each (``results/samples/<row>.jsonl``)."""
    write_text(out, "".join(json.dumps(r) + "\n" for r in rows))


def arm_parser(stage: str) -> argparse.ArgumentParser:
    """The command line of the ablation's stages: ``--arm`` and where models and results live."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.{stage}")
    parser.add_argument("--arm", required=True, help="an arm of ablation.arms in params.yaml")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--results-dir", default="results")
    return parser


def arm_of(params: Params, arm: str) -> str:
    """``arm``, checked to be an arm of ``ablation.arms`` (``--arm`` of the ablation stages)."""
    if arm not in params.ablation.arms:
        raise ConfigError(f"--arm {arm!r}: valid arms are {', '.join(params.ablation.arms)} (ablation.arms)")
    return arm
