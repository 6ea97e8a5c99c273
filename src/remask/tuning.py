"""Every policy at its own best settings, tuned on one draw and reported on another.

A policy has two knobs here: the sampling temperature and the selection rule (top-k, or
Gumbel-top-k with a noise temperature). Every policy gets the same search:

1. on the *tuning draw* (its own seed, ``sample.tuning_seed``, few samples), for each candidate
   selection rule, Brent's method (:func:`scipy.optimize.brentq`) on the temperature until the
   samples' character entropy is within a tolerance of the test text's (entropy rises with the
   temperature; the same seed at every pilot makes the curve smooth);
2. the rule with the lowest judge NLL at its matched temperature is chosen;
3. the *report draw* (``sample.seed``, never the tuning seed) samples at two temperatures around
   the tuned one, ``T * (1 -/+ report_spread)``, so that :mod:`remask.frontier` interpolates the
   quality at the text's entropy instead of reading it off the tuned point.

No measurement of the report draw feeds back into a choice, so selection and measurement never
share samples. A rule that cannot reach the text's entropy within ``temperature_range`` is
recorded as such and not chosen.

There is one search, :func:`tune_row`, for every row: a row of a tier's grid, a row of a study
variant, an ablation arm's policy and the public peer. What differs between them is resolved once
into a :class:`RowPlan` (its name, what runs it, its budgets and sample counts) and a sampler
``draw_at(budget)`` (ours: :func:`sampler_draw_at`; the peer's: :func:`remask.peer.peer_draw_at`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scipy.optimize import brentq

from remask.config import PolicySampling, SampleSection, SelectionRule, Tuning
from remask.data import CharTokenizer, reference_texts
from remask.judge import judge_nll_bits
from remask.metrics import char_entropy
from remask.model import DiffusionTransformer
from remask.policies import get_policy
from remask.records import BudgetTuning, Pilot, Tuned, TuningLog
from remask.sampling import SamplerOptions, diffusion_generate, steps_for_nfe

Measure = Callable[[float], tuple[float, float]]  # temperature -> (character entropy, judge NLL)
Draw = Callable[[float, SelectionRule, int, int], tuple[list[str], int]]  # (T, rule, seed, n) -> (texts, NFE)
DrawAt = Callable[[int], tuple[Draw, int]]  # NFE budget -> (the sampler at that budget, its steps)


class _Reached(Exception):
    def __init__(self, temperature: float) -> None:
        self.temperature = temperature


class _OutOfPilots(Exception):
    pass


def tune_temperature(
    measure: Measure, target: float, low: float, high: float, tolerance: float, max_pilots: int,
) -> tuple[float, bool, dict[float, tuple[float, float]]]:
    """The temperature in ``[low, high]`` whose entropy is within ``tolerance`` (relative) of
    ``target``: ``(temperature, reached, {temperature: (entropy, judge NLL)})``. Where the target
    lies outside the range, or ``max_pilots`` runs do not reach it, the closest pilot is returned
    with ``reached=False``."""
    seen: dict[float, tuple[float, float]] = {}

    def gap(temperature: float) -> float:
        if temperature not in seen:
            if len(seen) >= max_pilots:
                raise _OutOfPilots
            seen[temperature] = measure(temperature)
            if abs(seen[temperature][0] - target) <= tolerance * target:
                raise _Reached(temperature)
        return seen[temperature][0] - target

    try:
        if gap(low) * gap(high) < 0:
            brentq(gap, low, high, xtol=1e-3, maxiter=max_pilots)
    except _Reached as done:
        return done.temperature, True, seen
    except _OutOfPilots:
        pass
    closest = min(seen, key=lambda t: abs(seen[t][0] - target))
    return closest, abs(seen[closest][0] - target) <= tolerance * target, seen


def tune_policy(
    ranks: bool, measure: Callable[[float, SelectionRule], tuple[float, float]], target: float, cfg: Tuning,
) -> Tuned:
    """Tune the temperature for every selection rule of ``cfg`` and keep the best rule.

    ``measure(temperature, rule)`` samples the tuning draw and returns its entropy and judge NLL.
    A sampler whose score is noise (``ranks`` false: the ``random`` policy) has no selection knob:
    only the first rule is tried.
    """
    rules = cfg.selections if ranks else cfg.selections[:1]
    low, high = cfg.temperature_range
    candidates, pilots = [], []
    for rule in rules:
        temperature, reached, seen = tune_temperature(
            lambda t, rule=rule: measure(t, rule), target, low, high, cfg.entropy_tolerance, cfg.max_pilots)
        pilots += [Pilot(rule.rule, rule.temperature, t, e, n) for t, (e, n) in seen.items()]
        entropy, nll = seen[temperature]
        candidates.append((not reached, nll if reached else abs(entropy - target), rule, temperature, reached, nll))
    _, _, rule, temperature, reached, nll = min(candidates, key=lambda c: (c[0], c[1]))
    return Tuned(rule, temperature, reached, nll, pilots)


def report_temperatures(tuned: float, cfg: Tuning) -> list[float]:
    """The report draw's two temperatures around the tuned one, within the tuning range."""
    low, high = cfg.temperature_range
    return sorted({round(min(max(tuned * (1 + s), low), high), 6) for s in (-cfg.report_spread, cfg.report_spread)})


def target_entropy(data_dir: Path, tokenizer: CharTokenizer, num_samples: int, length: int) -> float:
    """The character entropy every row is tuned to reach: the test text's, on the windows the
    report compares with (:func:`remask.data.reference_texts`)."""
    return char_entropy(reference_texts(data_dir, tokenizer, num_samples, length))


@dataclass(frozen=True)
class RowPlan:
    """One row with its exceptions to the tier's settings resolved: its reported ``name``, the
    ``fields`` that say what runs it (written into its tuning log and every report sample), whether
    its score ranks tokens (``ranks``: a selection rule matters), its NFE ``budgets``, the report
    draw's samples per temperature and the tuning draw's per pilot, and the ``model`` it samples."""

    name: str
    fields: dict[str, Any]
    ranks: bool
    budgets: tuple[int, ...]
    num_samples: int
    tuning_samples: int
    model: str

    @classmethod
    def of(cls, name: str, spec: PolicySampling, cfg: SampleSection, policy: str, model: Path) -> "RowPlan":
        """A row of a grid running the registered ``policy`` (``spec``'s ``None``: the tier's value)."""
        return cls(name, {"runs": policy, "committed_budget": spec.committed_budget}, get_policy(policy).ranks,
                   tuple(spec.nfe_budgets or cfg.nfe_budgets), spec.num_samples or cfg.num_samples,
                   spec.tuning_samples or cfg.tuning.num_samples, str(model))


@dataclass(frozen=True)
class Search:
    """What every row's search shares: the judge that scores the pilots, the entropy they aim at,
    the sample section (tuning settings, tuning seed), the report draw's seed, and where progress
    goes."""

    judge: DiffusionTransformer
    tokenizer: CharTokenizer
    target: float
    sample: SampleSection
    report_seed: int
    log: Callable[[str], None] = print


def sampler_draw_at(model: DiffusionTransformer, tokenizer: CharTokenizer, cfg: SampleSection, policy: str,
                    committed_budget: float | None) -> DrawAt:
    """Our sampler as a :data:`DrawAt`: ``policy`` at the most steps each budget allows, with the
    sample section's options and the row's ``committed_budget``."""
    def draw_at(budget: int) -> tuple[Draw, int]:
        steps = steps_for_nfe(policy, budget)
        options = SamplerOptions(steps=steps, policy=policy, committed_budget=committed_budget,
                                 batch_size=cfg.batch_size, **cfg.sampler_options())

        def draw(temperature: float, rule: SelectionRule, seed: int, n: int) -> tuple[list[str], int]:
            run = replace(options, temperature=temperature, selection=rule.rule, selection_temperature=rule.temperature)
            result = diffusion_generate(model, n, cfg.length, run, seed=seed)
            return [tokenizer.decode(ids.tolist()) for ids in result.tokens], result.nfe
        return draw, steps
    return draw_at


def tune_row(plan: RowPlan, draw_at: DrawAt, search: Search) -> tuple[list[dict], TuningLog]:
    """The search of this module for one row at each of its budgets, then the report draw:
    ``(report samples, tuning log)``, each sample a dict holding the row's ``fields``."""
    cfg = search.sample
    if search.report_seed == cfg.tuning_seed:
        raise ValueError(f"the report seed {search.report_seed} is the tuning seed: a draw is never both")
    log = TuningLog(plan.name, plan.fields, plan.model, search.target, cfg.tuning_seed, search.report_seed)
    samples = []
    for budget in plan.budgets:
        draw, steps = draw_at(budget)
        label = f"[{plan.name} NFE {budget}]"

        def measure(temperature: float, rule: SelectionRule, draw: Draw = draw, label: str = label) -> tuple[float, float]:
            texts, _ = draw(temperature, rule, cfg.tuning_seed, plan.tuning_samples)
            entropy = char_entropy(texts)
            nll = sum(judge_nll_bits(search.judge, search.tokenizer, texts)) / len(texts)
            search.log(f"{label} tuning pilot: {rule.label}, T={temperature:.4f}: entropy {entropy:.3f} "
                       f"(target {search.target:.3f}), judge NLL {nll:.3f}")
            return entropy, nll

        tuned = tune_policy(plan.ranks, measure, search.target, cfg.tuning)
        search.log(f"{label} tuned: {tuned.selection.label}, T={tuned.temperature:.4f}"
                   + ("" if tuned.reached else " (the text's entropy was not reached within the tolerance)"))
        drawn = []
        for temperature in report_temperatures(tuned.temperature, cfg.tuning):
            texts, nfe = draw(temperature, tuned.selection, search.report_seed, plan.num_samples)
            drawn += [{"policy": plan.name, **plan.fields, "nfe_budget": budget, "steps": steps, "nfe": nfe,
                       "temperature": temperature, "selection": tuned.selection.rule,
                       "selection_temperature": tuned.selection.temperature, "seed": search.report_seed, "index": i,
                       "text": text} for i, text in enumerate(texts)]
        log.budgets[budget] = BudgetTuning(drawn[0]["steps"], drawn[0]["nfe"], tuned,
                                           sorted({r["temperature"] for r in drawn}))
        samples += drawn
    return samples, log
