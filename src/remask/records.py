"""The records the sampling stages write and the report reads, as typed dataclasses.

Each record is written by the stage that makes it (``to_dict``, the JSON in ``results/``) and read
back by the report (``from_dict``), so a field is named in one place and keys are typed (a budget
is an ``int``, a row and its variant are separate fields) instead of strings composed in one file
and parsed in another.

- :class:`Candidate`: one point of the search besides the temperature (a selection rule, draw knobs);
- :class:`Pilot`: one tuning run (a candidate at one temperature, on the tuning draw);
- :class:`Searched`: one candidate's outcome on the tuning draw;
- :class:`Tuned`: the outcome of tuning one row at one budget and entropy level (the candidate, the
  temperature, the pilots);
- :class:`LevelTuning`: that outcome with its target entropy and the report draw's temperatures;
- :class:`BudgetTuning`: a row at one budget: its steps, NFE and each entropy level's tuning;
- :class:`TuningLog`: a row's whole search (``results/tuning/<row>.json``), with the public peer's
  :class:`MasksLeft` where its sampler left ``[MASK]`` tokens;
- :class:`Setting`: one report setting (a row at one budget and temperature) as measured;
- :class:`FrontierPoint`: a row's frontier at one entropy level, with its tuned settings;
- :class:`Comparison`: one row minus one baseline at one entropy level, with its outcome.

Rows are compared at named *entropy levels* (:data:`LEVELS`): the test text's character entropy,
and a second, lower one (``sample.tuning.second_level``, a share of the text's) that samplers which
never reach the text's (the public peer's) reach too.

A measurement's metrics stay a mapping from the metric's name (``judge_nll``, ``word_validity``,
``rep_4``...) to its value, with ``<metric>_ci`` its interval, as :mod:`remask.metrics` and
:mod:`remask.frontier` compute them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from remask.config import DrawKnobs, SelectionRule, Tuning

TEXT_LEVEL = "text"  # the test text's character entropy
SECOND_LEVEL = "second"  # sample.tuning.second_level times the text's
LEVELS = {TEXT_LEVEL: "the test text's entropy", SECOND_LEVEL: "the second level"}


def entropy_levels(text_entropy: float, cfg: Tuning) -> dict[str, float]:
    """The entropy levels every row is tuned for and compared at: the test text's, and
    ``cfg.second_level`` times it where set (a level every compared sampler reaches: the public
    peer's never reaches the text's)."""
    levels = {TEXT_LEVEL: text_entropy}
    if cfg.second_level is not None:
        levels[SECOND_LEVEL] = cfg.second_level * text_entropy
    return levels


def level_title(level: str, target: float) -> str:
    """How a summary names an entropy level: ``the test text's entropy (4.800 bits)``."""
    return f"{LEVELS[level]} ({target:.3f} bits)"


@dataclass(frozen=True)
class Candidate:
    """One point of the search over a row's knobs besides the temperature: a selection rule, the
    draw knobs (``None``: the row's own sampler, which has none of ours: the public peer's) and the
    re-masking pool (``committed_budget``: ``None`` the policy's own; ``0`` only the tokens just
    filled; ``eta`` those and MaskGIT's share ``eta`` of the committed ones, for a policy whose
    candidates are all tokens)."""

    selection: SelectionRule
    knobs: DrawKnobs | None
    committed_budget: float | None = None

    @property
    def label(self) -> str:
        return (self.selection.label + ("" if self.knobs is None else f"; {self.knobs.label}")
                + ("" if self.committed_budget is None else f"; {pool_label(self.committed_budget)}"))

    def fields(self) -> dict[str, Any]:
        """What a sample or a pilot records of it (flat: a JSON line stays a table row)."""
        knobs = {} if self.knobs is None else self.knobs.model_dump()
        return {"selection": self.selection.rule, "selection_temperature": self.selection.temperature, **knobs,
                "committed_budget": self.committed_budget}

    @classmethod
    def from_fields(cls, raw: Mapping) -> "Candidate":
        rule = SelectionRule(rule=raw["selection"], temperature=raw["selection_temperature"])
        names = DrawKnobs.model_fields
        knobs = DrawKnobs(**{k: raw[k] for k in names if k in raw}) if "anneal" in raw else None
        return cls(rule, knobs, raw.get("committed_budget"))


def pool_label(committed_budget: float) -> str:
    """How a summary names a re-masking pool: ``just filled`` or ``+2% committed``."""
    return "just filled" if committed_budget == 0 else f"+{committed_budget * 100:g}% committed"


@dataclass(frozen=True)
class Pilot:
    """One tuning run: a candidate at one temperature, measured on the tuning draw."""

    candidate: Candidate
    temperature: float
    char_entropy: float
    judge_nll: float

    @property
    def rule(self) -> SelectionRule:
        return self.candidate.selection

    def to_dict(self) -> dict:
        return {**self.candidate.fields(), "temperature": self.temperature, "char_entropy": self.char_entropy,
                "judge_nll": self.judge_nll}

    @classmethod
    def from_dict(cls, raw: Mapping) -> "Pilot":
        return cls(Candidate.from_fields(raw), raw["temperature"], raw["char_entropy"], raw["judge_nll"])


@dataclass(frozen=True)
class Searched:
    """One candidate's outcome on the tuning draw: its tuned temperature, whether it reached the
    text's entropy, and its judge NLL interpolated there (``None`` where not reached)."""

    candidate: Candidate
    temperature: float
    reached: bool
    judge_nll: float | None
    pilots: int

    def to_dict(self) -> dict:
        knobs = self.candidate.knobs
        return {**self.candidate.fields(), "rule": self.candidate.selection.label,
                "knobs": "the row's own sampler" if knobs is None else knobs.label, "temperature": self.temperature,
                "reached": self.reached, "judge_nll_at_target": self.judge_nll, "pilots": self.pilots}

    @classmethod
    def from_dict(cls, raw: Mapping) -> "Searched":
        return cls(Candidate.from_fields(raw), raw["temperature"], raw["reached"], raw["judge_nll_at_target"],
                   raw["pilots"])


@dataclass(frozen=True)
class Tuned:
    """The outcome of tuning one row at one NFE budget and entropy level: the chosen candidate and
    temperature, and every candidate's outcome and the pilots this search ran."""

    candidate: Candidate
    temperature: float
    reached: bool  # the chosen candidate reached the target entropy within the tolerance
    judge_nll: float | None  # interpolated at the target entropy on the tuning draw (for choosing, never reporting)
    searched: list[Searched]
    pilots: list[Pilot]

    @property
    def selection(self) -> SelectionRule:
        return self.candidate.selection

    def to_dict(self) -> dict:
        return {**self.candidate.fields(), "temperature": self.temperature, "reached": self.reached,
                "tuning_judge_nll": self.judge_nll, "searched": [c.to_dict() for c in self.searched],
                "pilots": [p.to_dict() for p in self.pilots]}

    @classmethod
    def from_dict(cls, raw: Mapping) -> "Tuned":
        return cls(Candidate.from_fields(raw), raw["temperature"], raw["reached"], raw["tuning_judge_nll"],
                   [Searched.from_dict(c) for c in raw["searched"]], [Pilot.from_dict(p) for p in raw["pilots"]])


@dataclass(frozen=True)
class LevelTuning:
    """One row at one NFE budget and entropy level: the entropy it was tuned to reach (``target``,
    bits), how it was tuned, and where the report draw sampled it."""

    target: float
    tuned: Tuned
    report_temperatures: list[float]

    @property
    def pinned(self) -> bool:
        """Whether the search ended at an edge of the temperature range (the report draw's spread
        around the tuned temperature was cut there, so the tuned one is among the report's): its
        report draw cannot reach past the tuned entropy to bracket the level, whatever the tolerance
        let the search call reached."""
        return round(self.tuned.temperature, 6) in [round(t, 6) for t in self.report_temperatures]

    def to_dict(self) -> dict:
        return {"target_entropy": self.target, **self.tuned.to_dict(), "report_temperatures": self.report_temperatures}

    @classmethod
    def from_dict(cls, raw: Mapping) -> "LevelTuning":
        return cls(raw["target_entropy"], Tuned.from_dict(raw), raw["report_temperatures"])


@dataclass(frozen=True)
class BudgetTuning:
    """One row at one NFE budget: its steps and NFE, and its tuning at each entropy level
    (:data:`TEXT_LEVEL` first)."""

    steps: int
    nfe: int
    levels: dict[str, LevelTuning]

    @property
    def tuned(self) -> Tuned:
        """The tuning at the test text's entropy: the one the goal and the sampling CLI use."""
        return self.levels[TEXT_LEVEL].tuned

    def to_dict(self) -> dict:
        return {"steps": self.steps, "nfe": self.nfe, "levels": {k: v.to_dict() for k, v in self.levels.items()}}

    @classmethod
    def from_dict(cls, raw: Mapping) -> "BudgetTuning":
        return cls(raw["steps"], raw["nfe"], {k: LevelTuning.from_dict(v) for k, v in raw["levels"].items()})


def masks_left_key(seed: int, temperature: float, rule: SelectionRule) -> str:
    """The JSON key of one draw setting in :class:`MasksLeft` (one function writes and reads it)."""
    return f"{seed}/{temperature:g}/{rule.label}"


@dataclass
class MasksLeft:
    """``[MASK]`` tokens the public peer's sampler left in its texts, per NFE budget and draw
    setting (seed, temperature, selection rule), tuning and report draws alike."""

    counts: dict[int, dict[str, int]] = field(default_factory=dict)

    def record(self, budget: int, seed: int, temperature: float, rule: SelectionRule, count: int) -> None:
        self.counts.setdefault(budget, {})[masks_left_key(seed, temperature, rule)] = count

    def at(self, budget: int, seed: int, temperature: float, rule: SelectionRule) -> int:
        """The count of one draw; a draw that was never recorded is an error, not zero."""
        key = masks_left_key(seed, temperature, rule)
        try:
            return self.counts[budget][key]
        except KeyError:
            raise KeyError(f"no [MASK] count recorded for NFE {budget}, draw {key}") from None

    def to_dict(self) -> dict:
        return {str(budget): counts for budget, counts in self.counts.items()}

    @classmethod
    def from_dict(cls, raw: Mapping) -> "MasksLeft":
        return cls({int(budget): dict(counts) for budget, counts in raw.items()})


@dataclass
class TuningLog:
    """A row's search at every NFE budget (``results/tuning/<row>.json``).

    ``fields`` describe what ran it and travel into every report sample too: ``runs`` (the
    registered policy, or the peer's sampler), ``committed_budget``, and ``kind`` for the peer.
    ``extra``: a sampler's own settings (the peer's ``filter_thres``, ``mask_stand_in``).
    ``variant`` is the study variant whose model sampled the row; it is known from where the log
    is read (``results/study/variants/<variant>/``), so it is never written."""

    row: str
    fields: dict[str, Any]
    model: str
    target_entropy: float
    tuning_seed: int
    report_seed: int
    budgets: dict[int, BudgetTuning] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    masks_left: MasksLeft | None = None
    variant: str | None = None

    @property
    def runs(self) -> str:
        return self.fields.get("runs", self.row)

    def to_dict(self) -> dict:
        out = {"policy": self.row, **self.fields, "model": self.model, "target_entropy": self.target_entropy,
               "tuning_seed": self.tuning_seed, "report_seed": self.report_seed,
               "budgets": {str(b): t.to_dict() for b, t in self.budgets.items()}, **self.extra}
        if self.masks_left is not None:
            out["masks_left"] = self.masks_left.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Mapping, variant: str | None = None) -> "TuningLog":
        known = {"policy", "model", "target_entropy", "tuning_seed", "report_seed", "budgets", "masks_left"}
        fields = {k: v for k, v in raw.items() if k in ("runs", "committed_budget", "kind")}
        extra = {k: v for k, v in raw.items() if k not in known and k not in fields}
        masks = raw.get("masks_left")
        return cls(raw["policy"], fields, raw["model"], raw["target_entropy"], raw["tuning_seed"], raw["report_seed"],
                   {int(b): BudgetTuning.from_dict(t) for b, t in raw["budgets"].items()}, extra,
                   None if masks is None else MasksLeft.from_dict(masks), variant)


@dataclass(frozen=True)
class Setting:
    """One report setting as measured: the row's samples at one budget, entropy level (the one its
    temperature was tuned for) and temperature, with their text metrics
    (:func:`remask.metrics.text_metrics`: each metric and its ``<metric>_ci``)."""

    row: str
    budget: int
    steps: int
    nfe: int
    temperature: float
    selection_label: str
    metrics: Mapping[str, Any]
    level: str = TEXT_LEVEL

    @property
    def key(self) -> str:
        """Its key in ``metrics.json`` (written, never parsed)."""
        return f"{self.row}/nfe{self.budget}/{self.level}/t{self.temperature:g}"

    def to_dict(self) -> dict:
        return {"policy": self.row, "nfe_budget": self.budget, "level": self.level, "steps": self.steps,
                "nfe": self.nfe, "temperature": self.temperature, "selection_label": self.selection_label,
                **self.metrics}


@dataclass(frozen=True)
class FrontierPoint:
    """A row at one budget on its frontier, at one entropy ``level``: what ran it, how it was tuned
    for that level, and ``point`` (:func:`remask.frontier.frontier_point`: each metric with its
    ``<metric>_ci``, the ``segment`` of report settings used and whether they ``bracketed`` the
    level; an extrapolated point gives no verdict)."""

    row: str
    runs: str
    kind: str
    budget: int
    steps: int
    nfe: int
    selection_label: str
    tuned_temperature: float
    reached: bool
    report_temperatures: list[float]
    point: Mapping[str, Any]
    level: str = TEXT_LEVEL

    @property
    def bracketed(self) -> bool:
        return bool(self.point["bracketed"])

    def value(self, metric: str) -> float | None:
        """``metric`` at its entropy level; ``None`` where the frontier is extrapolated."""
        return self.point[metric]

    @property
    def key(self) -> str:
        """Its key in ``metrics.json`` (written, never parsed)."""
        return f"{self.row}/nfe{self.budget}/{self.level}"

    def to_dict(self) -> dict:
        return {"policy": self.row, "runs": self.runs, "kind": self.kind, "nfe_budget": self.budget,
                "level": self.level, "steps": self.steps, "nfe": self.nfe, "selection_label": self.selection_label,
                "tuned_temperature": self.tuned_temperature, "reached": self.reached,
                "report_temperatures": self.report_temperatures, **self.point}


@dataclass(frozen=True)
class Comparison:
    """``policy`` minus ``baseline`` at one entropy ``level``, at one NFE budget."""

    budget: int
    policy: str
    baseline: str
    differences: Mapping[str, Mapping]  # metric -> {"difference", "ci": [low, high], "better": +1 / 0 / -1}
    bracketed: bool  # both frontiers bracket the level
    kind: str = "learned"  # the kind of the policy the row runs
    baseline_kind: str = "training_free"  # ``peer``: the public peer, the one baseline that is not ours
    level: str = TEXT_LEVEL

    @property
    def outcome(self) -> str:
        """``beats``, ``loses``, ``no significant difference``, ``disagree`` (the judge NLL and the
        3-gram statistics significantly apart in opposite directions: a better judge NLL with
        statistics further from held-out text, which the judge rewards and the text's distribution
        does not, or a worse judge NLL with statistics closer to it; :attr:`judge_favoured` says
        which), ``mixed`` (better judge NLL, worse word validity) or ``no verdict`` (a frontier is
        extrapolated)."""
        if not self.bracketed:
            return "no verdict"
        nll, valid = self.differences["judge_nll"]["better"], self.differences["word_validity"]["better"]
        spread = self.differences.get("ngram_jsd", {}).get("better", 0)
        if nll * spread == -1:
            return "disagree"
        if nll == 1:
            return "beats" if valid >= 0 else "mixed"
        if nll == -1:
            return "loses"
        return "no significant difference"

    @property
    def judge_favoured(self) -> bool:
        """Whether the judge NLL favours the policy (of a ``disagree``: then the 3-gram statistics favour
        the baseline)."""
        return self.differences["judge_nll"]["better"] == 1

    def to_dict(self) -> dict:
        return {"budget": self.budget, "level": self.level, "policy": self.policy, "kind": self.kind,
                "baseline": self.baseline,
                "baseline_kind": self.baseline_kind, "differences": dict(self.differences),
                "bracketed": self.bracketed, "outcome": self.outcome}
