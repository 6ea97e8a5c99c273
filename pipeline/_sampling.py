"""Tuning and drawing every row of a grid on one model: shared by the stages that sample our models
(``pipeline.sample``) and our sampler on the public peer's generator (``pipeline.peer_sample
--our-sampler``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline._common import DATA_DIR
from remask.checkpoint import load_judge, load_model
from remask.config import ConfigError, Params, PolicySampling
from remask.policies import get_policy, require_trained
from remask.records import TuningLog, entropy_levels
from remask.runtime import World, process_device
from remask.tuning import RowPlan, Search, sampler_draw_at, target_entropy, trained_search, tune_row


def sample_rows(params: Params, rows: dict[str, PolicySampling], model_dir: Path, judge_dir: Path,
                variant: str | None = None, load: Callable = load_model,
                world: World = World()) -> tuple[list[dict], dict[str, TuningLog]]:
    """Tune and draw every row of ``rows`` on the model in ``model_dir`` (read by ``load``):
    ``(samples, tuning logs)``; on a study ``variant``'s model (or the public peer's, ``peer``),
    rows are named ``<row>@<variant>``. Each row's policy must be one the model was trained for.
    In a distributed ``world`` every process returns the same samples and logs (each draw's batches
    shared: ``sample.streams: per_batch``); only the first prints."""
    cfg = params.sample
    device = process_device(world, cfg.device)
    model, tok, training = load(model_dir, device)
    if training.get("mask_schedule") not in (None, cfg.schedule):
        raise ConfigError(f"sample.schedule {cfg.schedule!r}: {model_dir} was trained on the "
                          f"{training['mask_schedule']} masking schedule (train.mask_schedule)")
    searches = {row: spec.tuning(cfg.tuning, row) for row, spec in rows.items()}
    for row, spec in rows.items():
        require_trained(spec.runs(row), training, tuple(searches[row].temperature_range), str(model_dir))
        if spec.committed_budget is not None and get_policy(spec.runs(row)).candidates != "all":
            raise ConfigError(f"policies.{row}.committed_budget: policy {spec.runs(row)!r} re-masks only the "
                              "tokens it just filled; a committed budget needs one whose candidates are all tokens")
    judge = load_judge(judge_dir, tok, model_dir, device)
    levels = entropy_levels(target_entropy(DATA_DIR, tok, cfg.num_samples, cfg.length), cfg.tuning)
    search = Search(judge, tok, levels, cfg, cfg.seed,
                    (lambda m: print(m, flush=True)) if world.is_main else (lambda m: None))
    samples, logs = [], {}
    for row, spec in rows.items():
        name = row if variant is None else f"{row}@{variant}"
        trained = trained_search(spec.runs(row), training, searches[row], search.log)
        plan = RowPlan.of(name, spec, cfg, spec.runs(row), model_dir, trained)
        drawn, logs[name] = tune_row(plan, sampler_draw_at(model, tok, cfg, spec.runs(row), world),
                                     search)
        samples += drawn
    return samples, logs
