"""The rows a tier sampled, read back: shared by the stages that measure them (``evaluate_samples``)
and draw them again (``study_finalists``). Apart from ``_common`` so that the training stages,
which import that, do not depend on the sampling records."""

from __future__ import annotations

from pathlib import Path

from pipeline._common import PEER, read_json, samples_dir, tier_results
from remask.config import Params
from remask.records import TuningLog


def tier_rows(params: Params, tier: str, results: Path = Path("results")) -> tuple[dict[str, TuningLog], list[Path]]:
    """Every row a tier sampled: its tuning log, and the sample files holding their report samples:
    the grid's rows, and in the study the public peer's row, every variant's rows and our sampler's
    rows on the peer's generator (``<row>@<variant>``, ``<row>@peer``, each log knowing the model
    it ran on). ``params``: already for ``tier``."""
    tier_dir = tier_results(tier, results)
    rows = params.sample.policies
    tuning = {p: TuningLog.from_dict(read_json(tier_dir / "tuning" / f"{p}.json", f"sample@{p}")) for p in rows}
    files = [samples_dir(tier, results) / f"{p}.jsonl" for p in rows]
    if tier == "study":
        peer = params.study.peer.row  # sampled with its own generate() (study_peer_sample)
        tuning[peer] = TuningLog.from_dict(read_json(tier_dir / "tuning" / f"{peer}.json", "study_peer_sample"))
        files.append(samples_dir(tier, results) / f"{peer}.jsonl")
        sampled_on = {variant: f"study_sample_variant@{variant}" for variant in params.study.variants}
        if params.study.peer.rows:  # our sampler on the peer's generator: the peer's own row is on that model too
            sampled_on[PEER] = "study_sample_peer_model"
            tuning[peer].variant = PEER
        for variant, stage in sampled_on.items():  # rows <row>@<variant>, sampled on that model
            logs = read_json(tier_dir / "variants" / variant / "tuning.json", stage)
            tuning.update({name: TuningLog.from_dict(raw, variant) for name, raw in logs.items()})
            files.append(tier_dir / "variants" / variant / "samples.jsonl")
    return tuning, files
