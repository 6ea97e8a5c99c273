"""The scale axis's summary: does a learned re-masking score beat its own model's ``confidence``,
and by how much does the oracle ceiling, at each generator compute point?

Computes from the comparisons the report already makes (:func:`remask.report.compare_policies`:
every row of a model against that model's ``confidence`` and ``remdm_conf_budget``) one verdict
per compute point, family and entropy level, and renders ``results/scale/summary.md``. A family is
a model of ``scale.models`` (the joint critic, the post-hoc critic, ...); the oracle ceiling is
shown as such, never as a contender. Each point is judged in a stage of its own, which writes its
cells as :class:`CellResult` and its :class:`PointRecord`; the summary reads them back from every
point's file and renders them together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from remask.records import TEXT_LEVEL, Comparison, FrontierPoint, TuningLog, level_title
from remask.report import (BASELINE, EXTRAPOLATED, REP4_LIMIT, REVISITING_BASELINE, fmt_difference,
                           is_same_model_baseline, level_order)


@dataclass(frozen=True)
class PointRecord:
    """What the axis knows of one compute point: its steps, the generator's training compute and
    the validation numbers of each of its models (``val`` of their training metrics)."""

    name: str
    steps: int
    flops: float  # the generator's training compute: 6 x parameters x characters seen
    val: Mapping[str, Mapping[str, float]]  # model -> its validation metrics

    def to_dict(self) -> dict:
        return {"point": self.name, "steps": self.steps, "flops": self.flops, "val": dict(self.val)}

    @classmethod
    def from_dict(cls, raw: Mapping) -> "PointRecord":
        return cls(raw["point"], raw["steps"], raw["flops"], raw["val"])


@dataclass(frozen=True)
class CellPlace:
    """Where a cell sits: one row (of ``kind``) of one model at one point, budget and entropy level."""

    point: str
    model: str
    row: str
    kind: str
    budget: int
    level: str


@dataclass(frozen=True)
class Cell(CellPlace):
    """A row's place with its comparisons against its own model's baselines."""

    vs_confidence: Comparison
    vs_revisiting: Comparison | None
    rep_4: float | None

    def verdict(self, rep_limit: float) -> str:
        """``beats`` (judge NLL below both own baselines, the 3-gram statistics not further from the
        text, word validity not worse, rep-4 within the limit), ``loses`` (above its own
        ``confidence``), ``level``, or the comparison's own word where it cannot say (``no verdict``:
        extrapolated; ``disagree``; ``mixed``). A row that beats its own ``confidence`` but misses
        other conditions names every one it misses, since that is the row a reader looks for. The
        oracle is no contender: its cell is read as a ceiling (:func:`oracle_reading`)."""
        if self.kind == "oracle":
            return oracle_reading(self)
        outcome = self.vs_confidence.outcome
        if outcome != "beats":
            return {"loses": "loses", "no significant difference": "level"}.get(outcome, outcome)
        missed = []
        if self.vs_revisiting is not None and self.vs_revisiting.outcome != "beats":
            revisiting = self.vs_revisiting.baseline.split("@")[0]  # rows are <row>@<model>-<point>
            missed.append(f"vs `{revisiting}`: {self.vs_revisiting.outcome}")
        if self.rep_4 is None or self.rep_4 > rep_limit:
            missed.append(f"rep-4 over {rep_limit:.3f}")
        return f"beats `{BASELINE}` only ({'; '.join(missed)})" if missed else "beats"

    def result(self, rep_limit: float) -> "CellResult":
        """The cell as the summary reads it: its verdict and the differences it rests on."""
        return CellResult(self.point, self.model, self.row, self.kind, self.budget, self.level,
                          self.verdict(rep_limit), self.vs_confidence.differences["judge_nll"],
                          self.vs_confidence.differences.get("ngram_jsd"),
                          self.vs_revisiting.differences["judge_nll"] if self.vs_revisiting else None, self.rep_4)


@dataclass(frozen=True)
class CellResult(CellPlace):
    """A judged :class:`Cell`: what a point's ``scale_evaluate`` stage writes and ``scale_summary``
    renders, so that the summary needs no point's samples. Differences are the comparison's
    ``{"difference", "ci", "better"}``."""

    verdict: str
    judge_nll: Mapping  # vs its own model's confidence
    ngram_jsd: Mapping | None  # vs its own model's confidence (None: no held-out 3-grams)
    vs_revisiting: Mapping | None  # judge NLL vs its own model's remdm_conf_budget (None: not sampled)
    rep_4: float | None  # None: extrapolated

    def to_dict(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, raw: Mapping) -> "CellResult":
        return cls(**raw)


def oracle_reading(cell: Cell) -> str:
    """The oracle's row read as what it is, a ceiling: its difference is headroom only where it is
    below its model's ``confidence``. Its leave-one-out picks lower the text's entropy, so at a
    high level it must fill hotter than ``confidence`` and may fall behind it; it bounds nothing there."""
    return {"beats": "ceiling (oracle): its headroom",
            "loses": "oracle behind `confidence` here: no headroom measured",
            "no significant difference": "oracle level with `confidence`: no headroom measured",
            }.get(cell.vs_confidence.outcome, f"oracle: {cell.vs_confidence.outcome}")


def scale_cells(records: Sequence[Comparison], frontiers: Mapping[tuple[str, int, str], FrontierPoint],
                tuning: Mapping[str, TuningLog], variant_of: Mapping[str, tuple[str, str]]) -> list[Cell]:
    """Every learned row and oracle ceiling of every model against its own model's baselines (told
    apart by their tuning logs, :func:`remask.report.is_same_model_baseline`, not by their names);
    ``variant_of[row]``: the row's ``(point, model)``."""
    own: dict[tuple[str, int, str], dict[str, Comparison]] = defaultdict(dict)
    for r in records:
        if r.kind in ("learned", "oracle") and r.policy in variant_of and \
                variant_of.get(r.baseline) == variant_of[r.policy] and is_same_model_baseline(tuning[r.baseline]):
            own[(r.policy, r.budget, r.level)][tuning[r.baseline].runs] = r
    return [Cell(*variant_of[row], row, found[BASELINE].kind, budget, level, found[BASELINE],
                 found.get(REVISITING_BASELINE), frontiers[(row, budget, level)].value("rep_4"))
            for (row, budget, level), found in sorted(own.items()) if BASELINE in found]


def render_scale(cells: Sequence[CellResult], points: Sequence[PointRecord], reference: Mapping,
                 levels: Mapping[str, float], judge_val: Mapping[str, float], stage: str) -> str:
    """``results/scale/summary.md``: the compute points, then one table per budget and entropy level
    with a row per point and family: its judge-NLL difference from its own model's ``confidence``
    (and ``remdm_conf_budget``) with the interval and its half-width, the 3-gram divergence's, rep-4
    and the verdict; the oracle's row is the ceiling's headroom."""
    limit = REP4_LIMIT * reference["rep_4"]
    points = sorted(points, key=lambda p: p.flops)  # in the order of compute, whatever their names
    lines = ["# The scale axis: learned re-masking against confidence over generator compute", "",
             f"Written by the {stage}. Every learned row is compared with `confidence` (and `remdm_conf_budget`) on "
             "its own model, at matched entropy and NFE: 95% bootstrap intervals of the difference, paired by text, "
             "with their half-width (±). *beats*: judge NLL below both, word validity not worse, the 3-gram "
             f"statistics not further from held-out text, rep-4 at most {REP4_LIMIT}x the text's ({limit:.3f}). "
             f"The axis's judge: {judge_val.get('bpc', float('nan')):.3f} bits per character on validation text.", "",
             "## Compute points", "",
             "| point | steps | generator compute (FLOPs) | model | validation loss (nats) | bits per character "
             "(ELBO bound) | generator cost vs generator_only |", "|---|---|---|---|---|---|---|"]
    for point in points:
        base = point.val.get("generator_only", {}).get("gen_loss")
        for model, val in point.val.items():
            cost = "-" if base is None or model == "generator_only" else f"{val['gen_loss'] / base - 1:+.2%}"
            lines.append(f"| {point.name} | {point.steps:,} | {point.flops:.2e} | `{model}` | {val['gen_loss']:.4f} | "
                         f"{val.get('bpc_bound', float('nan')):.3f} | {cost} |")
    order = {p.name: i for i, p in enumerate(points)}
    for budget, level in sorted({(c.budget, c.level) for c in cells}, key=lambda k: level_order(*k)):
        lines += ["", f"## NFE {budget}, {level_title(level, levels[level])}", "",
                  "| point | family (model) | row | judge NLL vs own `confidence` | vs own `remdm_conf_budget` | "
                  "3-gram JSD vs own `confidence` | rep-4 | verdict |", "|---|---|---|---|---|---|---|---|"]
        here = sorted((c for c in cells if (c.budget, c.level) == (budget, level)),
                      key=lambda c: (order[c.point], c.kind == "oracle", c.model))
        for c in here:
            revisiting = fmt_difference(c.vs_revisiting) if c.vs_revisiting else "-"
            lines.append(f"| {c.point} | `{c.model}` | `{c.row}` | {fmt_difference(c.judge_nll)} "
                         f"| {revisiting} | {fmt_difference(c.ngram_jsd, 4) if c.ngram_jsd else '-'} | "
                         f"{EXTRAPOLATED if c.rep_4 is None else f'{c.rep_4:.3f}'} | {c.verdict} |")
    lines += ["", render_trend(cells, points)]
    return "\n".join(lines) + "\n"


def render_trend(cells: Sequence[CellResult], points: Sequence[PointRecord]) -> str:
    """The answer over the axis in one paragraph, computed: per family, the verdict at each point
    (``points`` in the order of compute, as :func:`render_scale` sorts them), at the text's entropy
    and the first budget."""
    if not cells:
        return "No row was compared: nothing to say about the trend."
    budget = min(c.budget for c in cells)
    order = [p.name for p in points]
    text = [f"**Over the axis** (NFE {budget}, the text's entropy):"]
    for model in sorted({c.model for c in cells if c.kind != "oracle"}):
        mine = {c.point: c for c in cells if c.model == model and c.budget == budget and c.level == TEXT_LEVEL
                and c.kind != "oracle"}
        walk = ", ".join(f"{p}: {mine[p].verdict} ({fmt_difference(mine[p].judge_nll)})" for p in order if p in mine)
        text.append(f"`{model}` {walk}.")
    return " ".join(text)
