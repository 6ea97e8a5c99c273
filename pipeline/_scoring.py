"""Scoring report samples and placing each row on its frontier: shared by the stages that evaluate
samples (``evaluate_samples`` for the quick tier and the study, ``evaluate_scale`` for the scale axis)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline._common import DATA_DIR, read_samples
from remask.checkpoint import load_model
from remask.config import ConfigError, Params, SampleSection
from remask.data import CharTokenizer, reference_texts, split_text, words
from remask.frontier import frontier_point
from remask.judge import judge_nll_bits
from remask.metrics import NgramReference, SettingSamples, setting_samples, text_metrics
from remask.model import DiffusionTransformer
from remask.records import Candidate, FrontierPoint, Setting, TuningLog, entropy_levels
from remask.report import kind_of
from remask.runtime import resolve_device

Group = tuple[str, int, str, float]  # (row, budget, level, temperature): one report setting


def report_groups(files: Sequence[Path], finalists_dir: Path | None = None,
                  finalists: Mapping | None = None) -> dict[Group, list[dict]]:
    """The report samples of every setting, keyed ``(row, budget, level, temperature)``; a finalist's
    (``finalists.json`` of the study) replaced by its draw on more texts."""
    redrawn = set() if finalists is None else {(r, int(b), level) for b, at in finalists["rows"].items()
                                                for level, rows in at.items() for r in rows if r in finalists["texts"]}
    groups: dict[Group, list[dict]] = defaultdict(list)
    for path in files:
        for row in read_samples(path):
            if (row["policy"], row["nfe_budget"], row["level"]) not in redrawn:
                groups[(row["policy"], row["nfe_budget"], row["level"], row["temperature"])].append(row)
    for row in read_samples(finalists_dir / "samples.jsonl") if finalists_dir else []:
        groups[(row["policy"], row["nfe_budget"], row["level"], row["temperature"])].append(row)
    return groups


@dataclass(frozen=True)
class Scorer:
    """How every text is measured: the judge's NLL and the text metrics against the training
    vocabulary and held-out 3-grams, with bootstrap intervals (``resamples``, ``level``, ``seed``)."""

    judge: DiffusionTransformer
    tok: CharTokenizer
    vocabulary: set[str]
    held_out: NgramReference
    resamples: int
    level: float
    seed: int

    @classmethod
    def of(cls, judge_dir: Path, params: Params) -> "Scorer":
        """The scorer of every evaluation stage: the judge in ``judge_dir``, the train split's
        vocabulary, the validation split's 3-grams (what ``ngram_jsd`` measures samples against),
        the ``evaluate_samples`` section's bootstrap."""
        cfg = params.evaluate_samples
        judge, tok, _ = load_model(judge_dir, resolve_device(params.sample.device))
        return cls(judge, tok, set(words(split_text(DATA_DIR, "train"))), NgramReference.of(split_text(DATA_DIR, "val")),
                   cfg.bootstrap_resamples, cfg.confidence_level, cfg.seed)

    def reference(self, sample: SampleSection) -> tuple[dict, dict[str, float]]:
        """The held-out text's metrics (the reference row) and the entropy levels rows are compared at."""
        reference, _ = self.measure(reference_texts(DATA_DIR, self.tok, sample.num_samples, sample.length), 0)
        return reference, entropy_levels(reference["char_entropy"], sample.tuning)

    def measure(self, texts: list[str], offset: int) -> tuple[dict, list[float]]:
        """The metrics of ``texts`` (their intervals drawn with ``seed + offset``) and each text's judge NLL."""
        nll = judge_nll_bits(self.judge, self.tok, texts)
        return text_metrics(texts, self.vocabulary, nll, self.resamples, self.level, self.seed + offset,
                            self.held_out), nll

    def settings(self, groups: Mapping[Group, list[dict]]) -> tuple[list[Setting], dict[tuple, list[SettingSamples]]]:
        """Every report setting measured, and its per-text samples keyed ``(row, budget, level)``."""
        settings, samples = [], defaultdict(list)
        for (policy, budget, level, temperature), rows in tqdm(sorted(groups.items()), desc="evaluate samples",
                                                               unit="setting"):
            texts = [r["text"] for r in rows]
            metrics, nll = self.measure(texts, 2)
            settings.append(Setting(policy, budget, rows[0]["steps"], rows[0]["nfe"], temperature,
                                    Candidate.from_fields(rows[0]).label, metrics, level))
            samples[(policy, budget, level)].append(setting_samples(texts, nll, self.vocabulary, self.tok.chars,
                                                                    self.held_out))
        return settings, samples

    def frontiers(self, samples: Mapping[tuple, list[SettingSamples]], tuning: Mapping[str, TuningLog],
                  levels: Mapping[str, float], log_of: Callable[[str], str]) -> dict[tuple, FrontierPoint]:
        """Each row's frontier point at each entropy level, between its report settings for that level;
        ``log_of(row)`` names the tuning log a mismatch is reported against (its stage reruns it)."""
        frontiers = {}
        for (policy, budget, level), parts in tqdm(sorted(samples.items()), desc="frontiers", unit="policy"):
            done = tuning[policy].budgets.get(budget)
            if done is None or level not in done.levels:
                raise ConfigError(f"{log_of(policy)} has no NFE {budget} at the {level} level; rerun its sampling stage")
            tuned = done.levels[level]
            if abs(tuned.target - levels[level]) > 1e-6 * levels[level]:
                raise ConfigError(f"{log_of(policy)} was tuned for entropy {tuned.target:.4f} at the {level} level, "
                                  f"not {levels[level]:.4f}; rerun its sampling stage")
            frontiers[(policy, budget, level)] = FrontierPoint(
                policy, tuning[policy].runs, kind_of(tuning[policy]), budget, done.steps, done.nfe,
                tuned.tuned.candidate.label, tuned.tuned.temperature, tuned.tuned.reached, tuned.report_temperatures,
                frontier_point(parts, levels[level], self.resamples, self.level, self.seed + 3), level)
        return frontiers
