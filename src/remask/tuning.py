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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from scipy.optimize import brentq

from remask.config import SampleSection, SelectionRule, Tuning
from remask.data import CharTokenizer
from remask.judge import judge_nll_bits
from remask.metrics import char_entropy
from remask.model import DiffusionTransformer
from remask.policies import get_policy
from remask.sampling import diffusion_generate, steps_for_nfe

Measure = Callable[[float], tuple[float, float]]  # temperature -> (character entropy, judge NLL)
Draw = Callable[[float, SelectionRule, int, int], tuple[list[str], int]]  # (T, rule, seed, n) -> (texts, NFE)


@dataclass(frozen=True)
class Pilot:
    """One tuning run: a selection rule at one temperature, measured on the tuning draw."""

    selection: str
    selection_temperature: float
    temperature: float
    char_entropy: float
    judge_nll: float


@dataclass(frozen=True)
class Tuned:
    """The outcome of tuning one policy at one NFE budget."""

    selection: SelectionRule
    temperature: float
    reached: bool  # the chosen pilot's entropy is within the tolerance of the target
    judge_nll: float  # at the chosen pilot, on the tuning draw (for choosing, never for reporting)
    pilots: list[Pilot]

    def to_dict(self) -> dict:
        return {"selection": self.selection.rule, "selection_temperature": self.selection.temperature,
                "temperature": self.temperature, "reached": self.reached, "tuning_judge_nll": self.judge_nll,
                "pilots": [asdict(p) for p in self.pilots]}


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


def policy_draw(model: DiffusionTransformer, tokenizer: CharTokenizer, policy: str, steps: int, cfg: SampleSection,
                committed_budget: float | None = None) -> Draw:
    """Our sampler as a :data:`Draw`: ``policy`` for ``steps`` steps with the sample section's options."""
    def draw(temperature: float, rule: SelectionRule, seed: int, n: int) -> tuple[list[str], int]:
        options = {**cfg.sampler_options(), "selection": rule.rule, "selection_temperature": rule.temperature}
        result = diffusion_generate(model, n, cfg.length, steps, policy=policy, temperature=temperature, seed=seed,
                                    batch_size=cfg.batch_size, committed_budget=committed_budget, **options)
        return [tokenizer.decode(ids.tolist()) for ids in result.tokens], result.nfe
    return draw


def tune_and_draw(
    model: DiffusionTransformer, judge: DiffusionTransformer, tokenizer: CharTokenizer, policy: str, budget: int,
    target: float, cfg: SampleSection, num_samples: int, tuning_samples: int, report_seed: int, log=print,
    committed_budget: float | None = None, label: str | None = None,
) -> tuple[Tuned, list[dict]]:
    """Tune ``policy`` at NFE ``budget`` on ``cfg.tuning_seed``, then draw ``num_samples`` at each
    report temperature on ``report_seed``: ``(tuned, rows)``, one row per report sample, named
    ``label`` (the grid's row; default the policy) and run with the sampler's ``committed_budget``."""
    steps = steps_for_nfe(policy, budget)
    draw = policy_draw(model, tokenizer, policy, steps, cfg, committed_budget)
    return tune_and_draw_with(draw, get_policy(policy).ranks, judge, tokenizer, budget, steps, target, cfg, num_samples,
                              tuning_samples, report_seed, log, label or policy,
                              {"runs": policy, "committed_budget": committed_budget})


def tune_and_draw_with(
    draw: Draw, ranks: bool, judge: DiffusionTransformer, tokenizer: CharTokenizer, budget: int, steps: int,
    target: float, cfg: SampleSection, num_samples: int, tuning_samples: int, report_seed: int, log, label: str,
    fields: dict,
) -> tuple[Tuned, list[dict]]:
    """The search of :func:`tune_and_draw` around any sampler ``draw`` (ours, or the public peer's
    :func:`remask.peer.peer_draw`): the same pilots, rules, seeds and report temperatures for every
    row. ``fields`` go into every report row (``runs``, ...)."""
    if report_seed == cfg.tuning_seed:
        raise ValueError(f"the report seed {report_seed} is the tuning seed: a draw is never both")

    def measure(temperature: float, rule: SelectionRule) -> tuple[float, float]:
        texts, _ = draw(temperature, rule, cfg.tuning_seed, tuning_samples)
        entropy, nll = char_entropy(texts), sum(judge_nll_bits(judge, tokenizer, texts)) / len(texts)
        log(f"[{label} NFE {budget}] tuning pilot: {rule.label}, T={temperature:.4f}: entropy {entropy:.3f} "
            f"(target {target:.3f}), judge NLL {nll:.3f}")
        return entropy, nll

    tuned = tune_policy(ranks, measure, target, cfg.tuning)
    log(f"[{label} NFE {budget}] tuned: {tuned.selection.label}, T={tuned.temperature:.4f}"
        + ("" if tuned.reached else " (the text's entropy was not reached within the tolerance)"))
    rows = []
    for temperature in report_temperatures(tuned.temperature, cfg.tuning):
        texts, nfe = draw(temperature, tuned.selection, report_seed, num_samples)
        rows += [{"policy": label, **fields, "nfe_budget": budget, "steps": steps, "nfe": nfe,
                  "temperature": temperature, "selection": tuned.selection.rule,
                  "selection_temperature": tuned.selection.temperature, "seed": report_seed, "index": i, "text": text}
                 for i, text in enumerate(texts)]
    return tuned, rows
