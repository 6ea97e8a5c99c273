"""Typed, validated view of ``params.yaml``.

Every stage reads its section through :func:`load_params`, so a typo, a wrong type, a missing key
or an out-of-range value fails before any work starts, with a message naming the key path
(``train.alpha must be >= 0, got -1``).

``params.yaml`` is the one source of values: this module types and validates them but holds no
default of its own (a key missing from a params file is an error, not a silent fallback). The
only ``None`` defaults are the grid's "use the tier's value" and the noise temperature of a
``topk`` rule, which has none. A test walks every section to keep it so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from remask.errors import ConfigError

# Names the sections accept, each equal to its registry (tests/test_config.py checks every one): this
# module imports no registry, so that reading params never imports torch
PolicyName = Literal["random", "confidence", "remdm_conf", "critic", "critic_confidence", "critic_fused",
                     "critic_committed", "oracle_loo", "self_planning"]  # remask.policies.POLICIES
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)
OracleName = Literal["oracle_loo"]  # the policies of kind "oracle" (they read the clean text): ceilings only
TargetName = Literal["differs", "loo", "generated"]  # remask.critic_targets.TARGETS
ScheduleName = Literal["linear", "cosine"]  # remask.schedules.SCHEDULES
SelectionName = Literal["topk", "gumbel"]  # remask.sampling.SELECTIONS
AnnealName = Literal["constant", "linear"]  # remask.tempering.ANNEALING
StreamsName = Literal["sequential", "per_batch"]  # remask.sampling.STREAMS
CriticHead = Literal["linear", "mlp"]  # remask.model.ModelConfig.critic_head
DeviceName = Literal["auto", "cpu", "cuda", "mps"]  # remask.runtime.DEVICES
Tier = Literal["quick", "study"]
TIERS: tuple[Tier, ...] = get_args(Tier)


class _Section(BaseModel):
    # strict: YAML gives real types, so "1" for a number or "true" for a bool is a mistake, not input
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def with_(self, **changes: Any) -> Any:
        """A validated copy with ``changes`` (pydantic's ``model_copy`` does not validate)."""
        return type(self).model_validate({**self.model_dump(), **changes})


class DataSection(_Section):
    """Where the corpus comes from and how it is split: by ``documents`` (shuffled with
    ``split_seed``, whole documents per split) or ``contiguous`` (one text cut by characters in
    order: train, val, test; for a corpus of one big file). ``*_fraction``: of the documents, or
    of the characters."""

    source: str = Field(min_length=1)
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    split: Literal["documents", "contiguous"]
    val_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)
    split_seed: int = Field(ge=0)
    unknown_char: str = Field(min_length=1, max_length=1)


class ModelSection(_Section):
    n_layer: int = Field(ge=1, le=64)
    n_head: int = Field(ge=1, le=64)
    n_embd: int = Field(ge=8, le=8192)
    block_size: int = Field(ge=8, le=65536)
    dropout: float = Field(ge=0, lt=1)
    rope_base: float = Field(gt=1)
    critic_head: CriticHead
    critic_layers: int = Field(ge=0, le=8)  # blocks of the critic's own on the body (a post-hoc critic's)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ModelSection":
        if self.n_embd % self.n_head != 0 or (self.n_embd // self.n_head) % 2 != 0:
            raise ValueError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head}) "
                "into an even head size (rotary embeddings rotate pairs of channels)"
            )
        return self


class OptimSection(_Section):
    """What any training run needs: the optimiser, its schedule, checkpoints and device."""

    seed: int = Field(ge=0)
    device: DeviceName
    compile: bool
    batch_size: int = Field(ge=1)
    max_steps: int = Field(ge=1)
    lr: float = Field(gt=0, le=1)
    min_lr: float = Field(ge=0, le=1)
    warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0)
    grad_clip: float = Field(ge=0)
    eval_every: int = Field(ge=1)
    eval_batches: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)
    resume: bool

    @model_validator(mode="after")
    def _lr_order(self) -> "OptimSection":
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        return self


class TrainSection(OptimSection):
    """The masked-diffusion multi-task run: generator loss plus ``alpha`` times critic loss."""

    mask_schedule: ScheduleName
    mask_eps: float = Field(gt=0, lt=1)
    elbo_weighting: bool
    alpha: float = Field(ge=0)
    alpha_warmup_steps: int = Field(ge=0)
    # the self-correcting generator: a share of the *visible* tokens is replaced (by samples of a no-grad
    # generator pass, or by random characters) and the cross-entropy also covers them (policy self_planning)
    self_correct: float = Field(ge=0, lt=1)
    self_correct_source: Literal["samples", "random"]


class CriticSection(_Section):
    """How the critic is trained (:mod:`remask.critic_targets`); every option is an ablation lever."""

    target: TargetName  # the label; see remask.critic_targets
    fill_share: float = Field(gt=0, le=1)  # share of the masked positions filled (the rest stay masked)
    sample_temperature: float = Field(gt=0)
    sample_temperature_spread: float = Field(ge=0)  # per sequence ~ U(T, T + spread)
    label_scope: Literal["filled", "all"]
    detach_body: bool
    pos_weight: float = Field(gt=0)  # BCE weight of the error class
    replace_visible: float = Field(ge=0, lt=1)  # share of visible tokens swapped for random characters
    input: Literal["filled", "partial"]  # partial: a random share of the filled sequence re-masked
    rollout_share: float = Field(ge=0, le=1)  # share of sequences the critic judges after a two-step rollout
    row_share: float = Field(gt=0, le=1)  # share of each batch's sequences the critic pass trains on

    @model_validator(mode="after")
    def _target_levers(self) -> "CriticSection":
        if (self.target == "loo") != (self.fill_share < 1):
            raise ValueError(f"fill_share must be < 1 for target loo (a few fills in a real context) and 1 for the "
                             f"other targets, got {self.fill_share} with target {self.target}")
        if self.target == "generated" and self.label_scope != "all":
            raise ValueError("target generated labels every shown position (was it generated?): label_scope must "
                             "be all")
        if self.target != "differs" and self.replace_visible > 0:
            raise ValueError(f"replace_visible is a lever of target differs, not {self.target}")
        if self.target == "loo" and self.rollout_share > 0:
            raise ValueError("rollout_share is a lever of targets differs and generated, not loo (whose context is "
                             "real text)")
        return self


class JudgeSection(_Section):
    """The causal character model that scores samples; trained on the same train split."""

    model: ModelSection
    train: OptimSection


class EvaluateCriticSection(_Section):
    """The critic as an error detector on the test split."""

    seed: int = Field(ge=0)
    num_windows: int = Field(ge=2)
    mask_ratios: list[float] = Field(min_length=1)
    temperature: float = Field(gt=0)
    rollout_policies: list[PolicyName] = Field(min_length=1)
    rollout_windows: int = Field(ge=2)
    rollout_mask_ratio: float = Field(gt=0, le=1)
    rollout_steps: int = Field(ge=2)
    reliability_bins: int = Field(ge=2, le=100)
    refreshed_policy: PolicyName  # whose unconditional samples the refreshed target labels
    refreshed_samples: int = Field(ge=1)  # each state costs L x C judge passes (about 20 s here)
    refreshed_steps: int = Field(ge=2)  # states: the fill halfway through and the final samples
    implausible_below: float = Field(gt=0, lt=1)  # p_judge(token | rest) below it: implausible

    @model_validator(mode="after")
    def _ratios(self) -> "EvaluateCriticSection":
        bad = [r for r in self.mask_ratios if not 0 < r < 1]
        if bad:
            raise ValueError(f"mask_ratios must lie strictly between 0 and 1, got {bad}")
        return self


SAMPLER_KEYS = ("schedule", "top_p", "randomness_strength", "selection", "selection_temperature")


def _check_registered(rows: dict[str, PolicySampling]) -> None:
    """Every row names a registered policy, by its name or by ``policy``."""
    for name, spec in rows.items():
        if spec.runs(name) not in POLICY_NAMES:
            raise ValueError(f"policies.{name}: not a registered policy; name one with policy: "
                             f"({', '.join(POLICY_NAMES)})")


class SelectionRule(_Section):
    """One candidate selection rule of the search: plain top-k, or Gumbel-top-k on the log scores
    with noise temperature ``temperature`` (annealed to top-k over the steps)."""

    rule: SelectionName
    temperature: float = Field(0.0, ge=0)  # the noise temperature; topk has none, so it may leave it out

    @model_validator(mode="after")
    def _noise(self) -> "SelectionRule":
        if (self.rule == "gumbel") != (self.temperature > 0):
            raise ValueError("temperature must be > 0 for rule gumbel and 0 (or left out) for rule topk")
        return self

    @property
    def label(self) -> str:
        return "top-k" if self.rule == "topk" else f"gumbel {self.temperature:g}"


class DrawKnobs(_Section):
    """One candidate of the search's draw knobs (:mod:`remask.tempering`): the temperature's
    annealing over the steps (``constant``, or ``linear`` from the tuned start temperature to
    ``floor`` at the last step) and the vocabulary filter (keep the ``top_k_share`` most likely
    tokens, then nucleus ``top_p``)."""

    anneal: AnnealName
    floor: float = Field(0.0, ge=0)  # read by linear only, so constant may leave it out
    top_k_share: float = Field(gt=0, le=1)
    top_p: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _floor(self) -> "DrawKnobs":
        if self.anneal == "constant" and self.floor != 0:
            raise ValueError("floor is the last step's temperature of anneal linear; constant has none")
        return self

    @property
    def label(self) -> str:
        parts = ["T constant" if self.anneal == "constant" else f"T linear to {self.floor:g}"]
        parts += [f"top-k {self.top_k_share:.0%}"] if self.top_k_share < 1 else []
        parts += [f"top-p {self.top_p:g}"] if self.top_p < 1 else []
        return ", ".join(parts)

    def sampler_options(self) -> dict[str, Any]:
        """These knobs as :class:`remask.sampling.SamplerOptions` fields."""
        return {"anneal": self.anneal, "temperature_floor": self.floor, "top_k_share": self.top_k_share,
                "top_p": self.top_p}


def _ordered(bounds: list[float]) -> list[float]:
    """A search range ``[low, high]`` with ``0 < low < high``."""
    if not 0 < bounds[0] < bounds[1]:
        raise ValueError(f"must be [low, high] with 0 < low < high, got {bounds}")
    return bounds


TemperatureRange = Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_ordered)]


class PolicySampling(_Section):
    """One row of a tier's grid: a registered policy (``policy``; ``None``: the row's name) and its
    exceptions to the tier's settings (``None``: the tier's value). The ``oracle_loo`` ceiling costs
    one pass per position per step, so it is drawn with fewer samples and may be searched over
    fewer candidates (``selections``, ``draws``: a subset of the tier's search for this row alone,
    which its tuning log records; a narrower search can only understate a ceiling) and over its own
    ``temperature_range`` (a ceiling that picks likelier tokens needs hotter fills to reach the
    text's entropy; the row's training is checked over it as over the tier's). ``committed_budget``:
    the sampler's pool option (:func:`remask.sampling.diffusion_generate`), for policies whose
    candidates are every token: ``None`` re-masks the top of all tokens, a share ``eta`` keeps
    MaskGIT's choice among the tokens just filled and re-masks ``round(eta * committed)`` committed
    tokens besides."""

    policy: PolicyName | None = None
    committed_budget: float | None = Field(None, ge=0, le=1)
    num_samples: int | None = Field(None, ge=2)
    tuning_samples: int | None = Field(None, ge=2)
    nfe_budgets: list[int] | None = Field(None, min_length=1)
    selections: list[SelectionRule] | None = Field(None, min_length=1)
    draws: list[DrawKnobs] | None = Field(None, min_length=1)
    temperature_range: TemperatureRange | None = None

    def runs(self, row: str) -> str:
        """The registered policy the row named ``row`` runs."""
        return self.policy or row

    def tuning(self, tier: "Tuning", row: str) -> "Tuning":
        """The tier's search with this row's narrower ``selections`` and ``draws`` and its own
        ``temperature_range`` where it names them; a rule or draw knob the tier does not search is
        refused (the row ``row`` narrows, it never searches what the others cannot)."""
        for key, mine, theirs in (("selections", self.selections, tier.selections), ("draws", self.draws, tier.draws)):
            extra = [choice for choice in mine or () if choice not in theirs]
            if extra:
                raise ConfigError(f"policies.{row}.{key}: {extra[0].label} is not among the tier's {key}: a row may "
                                  "only narrow the search every row gets")
        return tier.with_(selections=self.selections or tier.selections, draws=self.draws or tier.draws,
                          temperature_range=self.temperature_range or tier.temperature_range)


class Tuning(_Section):
    """How each policy's knobs are tuned on the tuning draw (``sample.tuning_seed``): for every
    candidate, a selection rule of ``selections`` with draw knobs of ``draws`` (every pair), a
    secant search on the sampling temperature within ``temperature_range`` (at most ``max_pilots``
    pilots) until the samples' character entropy is within ``entropy_tolerance`` (relative) of the
    test text's; the candidate with the lowest judge NLL interpolated at the text's entropy wins
    (:mod:`remask.tuning`). The report draw then samples at
    ``T * (1 - report_spread)`` and ``T * (1 + report_spread)``, so that the frontier can be
    interpolated at the text's entropy. Where ``second_level`` is set, all of it is done again at
    that share of the text's entropy (a second level to compare at, which samplers that never
    reach the text's entropy reach). A row whose policy may re-mask any token and whose pool the
    row does not fix also tries the winner's knobs with each re-masking pool of
    ``committed_budgets`` (0: only the tokens just filled; eta: those and a share eta of the
    committed ones). ``search``: ``grid`` tries every selection rule with every draw knob;
    ``coordinate`` every rule with the first draw knobs, then the winner's rule with the others
    (rules + draws candidates instead of rules x draws)."""

    num_samples: int = Field(ge=2)
    temperature_range: TemperatureRange
    entropy_tolerance: float = Field(gt=0, lt=0.5)
    max_pilots: int = Field(ge=3)
    report_spread: float = Field(gt=0, lt=0.5)
    second_level: Annotated[float, Field(gt=0, lt=1)] | None
    committed_budgets: list[Annotated[float, Field(ge=0, le=1)]]  # re-masking pools tried after the rest
    search: Literal["grid", "coordinate"]  # every rule with every draw knob, or one after the other
    selections: list[SelectionRule] = Field(min_length=1)
    draws: list[DrawKnobs] = Field(min_length=1)


class SampleGrid(_Section):
    """Which samples a tier draws: its policies (each tuned, then drawn on the report seed) and NFE budgets."""

    policies: dict[str, PolicySampling] = Field(min_length=1)
    nfe_budgets: list[int] = Field(min_length=1)
    tuning: Tuning

    @model_validator(mode="after")
    def _budgets(self) -> "SampleGrid":
        for name, spec in self.policies.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"policies: row name {name!r} must be letters, digits and underscores")
            for budget in self.nfe_budgets + (spec.nfe_budgets or []):
                if budget < 2:
                    raise ValueError(f"every NFE budget must be >= 2, got {budget} ({name})")
        _check_registered(self.policies)
        return self

    def policy_of(self, row: str) -> str:
        """The registered policy a row of the grid runs."""
        return self.policies[row].runs(row)


class SampleSection(SampleGrid):
    """The quick tier's samples (the grid) and how every stage runs the sampler."""

    num_samples: int = Field(ge=2)
    length: int = Field(ge=8)
    schedule: ScheduleName
    top_p: float = Field(gt=0, le=1)
    randomness_strength: float = Field(ge=0, le=1)
    selection: SelectionName
    selection_temperature: float = Field(ge=0)
    seed: int = Field(ge=0)  # the report draw
    tuning_seed: int = Field(ge=0)  # the tuning draw: never the report's
    batch_size: int = Field(ge=1)
    streams: StreamsName  # per_batch: a stream per batch, shardable (remask.sampling)
    device: DeviceName

    @model_validator(mode="after")
    def _seeds(self) -> "SampleSection":
        if self.seed == self.tuning_seed:
            raise ValueError(f"tuning_seed must differ from seed ({self.seed}): knobs tuned on the samples "
                             "they are reported on would be selected and measured on the same draw")
        return self

    def sampler_options(self) -> dict[str, Any]:
        """The sampler's fixed settings, shared by every stage that runs it; the samples of
        ``sample@<policy>`` replace ``selection`` and ``selection_temperature`` by the tuned ones."""
        return {k: getattr(self, k) for k in SAMPLER_KEYS}


# "params plus overrides": a study variant and an ablation arm are both these params with some keys of
# the sections below changed (Params.with_overrides); one validator checks both
OVERRIDABLE = ("model", "train", "critic")
Overrides = dict[str, dict[str, Any]]


def _check_overrides(where: str, overrides: Overrides) -> None:
    wrong = sorted(set(overrides) - set(OVERRIDABLE))
    if wrong:
        raise ValueError(f"{where}.{wrong[0]}: overrides change only the {', '.join(OVERRIDABLE)} sections")


# the critic's own keys of the model section: all a post-hoc critic may change of its frozen generator's model
CRITIC_MODEL_KEYS = ("critic_head", "critic_layers")


class Variant(_Section):
    """A model of the study trained from scratch exactly like ``models/multitask`` (same data, steps
    and seed), with ``overrides`` of the ``model``, ``train`` and ``critic`` sections, and sampled with
    its own ``policies`` rows on the study's grid. Rows are reported as ``<row>@<variant>``.

    ``frozen_generator`` (a post-hoc critic): instead of from scratch, the variant starts from that
    quick-tier model's weights with its generator frozen (body and generator head), so only the
    critic's head and blocks train, on the frozen generator's own fills; it cannot cost the
    generator anything. Its ``train`` overrides then set the critic's own run (steps, schedule)."""

    frozen_generator: Literal["generator_only"] | None
    overrides: Overrides
    policies: dict[str, PolicySampling] = Field(min_length=1)

    @model_validator(mode="after")
    def _frozen(self) -> "Variant":
        if self.frozen_generator is None:
            return self
        changed = sorted(set(self.overrides.get("model", {})) - set(CRITIC_MODEL_KEYS))
        if changed:
            raise ValueError(f"overrides.model.{changed[0]}: a variant with frozen_generator "
                             f"{self.frozen_generator} keeps its generator's model; only {', '.join(CRITIC_MODEL_KEYS)} "
                             f"may change")
        if self.overrides.get("train", {}).get("self_correct", 0) or self.overrides.get("train", {}).get("alpha") == 0:
            raise ValueError("overrides.train: a variant with frozen_generator trains a critic only (alpha > 0, "
                             "self_correct 0)")
        return self

    @model_validator(mode="after")
    def _rows(self) -> "Variant":
        _check_overrides("overrides", self.overrides)
        _check_registered(self.policies)
        runs = {(spec.runs(row), spec.committed_budget is not None) for row, spec in self.policies.items()}
        if not {("confidence", False), ("remdm_conf", True)} <= runs:
            raise ValueError("policies: a variant samples its own model's baselines beside its other rows, "
                             "confidence: {} and remdm_conf_budget: {policy: remdm_conf, committed_budget: <share>}, "
                             "so that a row's score reads apart from the variant's generator")
        return self


class PeerSection(_Section):
    """The public peer of the study (:mod:`remask.peer`): lucidrains' x-transformers
    ``NonAutoregressiveWrapper`` with ``self_token_critic=True``, built at the ``model`` section's
    size, trained with its own loss on the ``train`` section's data, steps, batch and optimiser, and
    sampled with its own ``generate()``, tuned like every row. The keys are its own knobs, at its
    defaults; its row is reported as ``row``. ``temperature_range`` replaces the search's range for
    its sampler alone: its temperature is a start temperature annealed to 0 over the steps, drawn
    from the 30% likeliest tokens, so its entropy saturates (4.19 bits at 2.0 on the study's report
    draw, 4.25 at 3.0) and a range ending at 2.0 leaves its report draw below the second level, with no
    verdict; a wider range can only help the peer. ``rows``: rows of our sampler run on its generator
    (``<row>@peer``), so that its model and its sampler read apart."""

    row: str = Field(pattern=r"^[A-Za-z0-9_]+$")  # letters, digits, underscores
    no_replace_prob: float = Field(ge=0, lt=1)  # masked tokens shown as themselves (BERT)
    random_token_prob: float = Field(ge=0, lt=1)  # masked tokens shown as random tokens (BERT)
    critic_loss_weight: float = Field(ge=0)
    filter_thres: float = Field(ge=0, lt=1)  # generate(): top-k keeps ceil((1 - thres) * vocab) tokens
    attn_flash: bool  # its attention through torch's scaled_dot_product_attention (same maths, faster)
    temperature_range: TemperatureRange  # its start temperature's search range
    rows: dict[str, PolicySampling]  # rows drawn from its generator by our sampler, reported as <row>@peer


class Finalists(_Section):
    """The study's finalists (each model's training-free baselines, the oracle ceiling, each model's
    best learned row chosen on the tuning draw, the public peer) drawn again on ``num_samples`` texts
    per report setting, so that their differences decide (an interval shrinks about as 1/sqrt(n));
    the oracle on ``oracle_num_samples``. A finalist whose report draw already holds as many is not
    drawn again."""

    num_samples: int = Field(ge=2)
    oracle_num_samples: int = Field(ge=2)  # the oracle ceiling's (a pass per position per step)


class StudySection(_Section):
    """The opt-in study tier (``study/dvc.yaml``): the full frontier. Its samples use the ``sample``
    section's settings with this grid; the ablation arms are the ``ablation`` section; the
    ``variants`` are the critic targets and the self-correcting generator, each trained in full."""

    sample: SampleGrid
    variants: dict[str, Variant]
    peer: PeerSection
    finalists: Finalists
    detection_samples: int = Field(ge=2)  # sampler runs of the study's refreshed-target detection
    detection_positions: int = Field(ge=1)  # tokens of each run's state the judge labels, at random

    @model_validator(mode="after")
    def _variant_names(self) -> "StudySection":
        if self.peer.row in self.sample.policies:
            raise ValueError(f"peer.row: {self.peer.row!r} is also a row of study.sample.policies")
        clash = sorted(set(self.variants) & {"multitask", "generator_only", "judge", "ablation", "peer"})
        bad = [n for n in self.variants if not n.replace("_", "").isalnum()]
        if clash or bad:
            raise ValueError(f"variants: {(clash or bad)[0]!r} cannot name a variant (letters, digits, underscores; "
                             "not a quick-tier model)")
        return self


class Ceiling(_Section):
    """The scale axis's ceiling rows (the ``oracle_loo`` oracle, nothing that contends): sampled on
    each point's ``model`` in a stage of their own, ``scale_ceiling@<point>``, because the oracle (a
    pass per position per step) and that model's baselines together nearly filled a stage's 30
    minutes on a CPU (29:46 at 4,500 steps), leaving its search no room; reported as
    ``<row>@<model>-<point>`` against that model's own baselines, like its other rows."""

    model: str
    policies: dict[str, PolicySampling]  # none: the stage draws nothing and the summary shows no ceiling

    @model_validator(mode="after")
    def _rows(self) -> "Ceiling":
        _check_registered(self.policies)
        oracles = get_args(OracleName)
        for name, spec in self.policies.items():
            if spec.runs(name) not in oracles:
                raise ValueError(f"policies.{name}: the ceiling draws oracle rows only ({', '.join(oracles)}); a "
                                 f"contender belongs in scale.models.{self.model}.policies")
        return self


class ScaleSection(_Section):
    """The opt-in scale axis (``scale/dvc.yaml``, ``make scale``): the study's finalist rows at
    several generator compute points. A point is these params plus its ``points`` overrides of the
    ``model`` and ``train`` sections (each run with its own schedule to its end); at every point each
    of ``models`` (a :class:`Variant`: its overrides, its rows, and ``frozen_generator`` naming the
    point's own model it starts from) is trained, sampled on the study's grid settings at
    ``nfe_budgets`` with ``num_samples`` report texts per temperature (a row's own count, the
    oracle's, still wins), and compared with its own model's ``confidence``; ``ceiling``'s rows (the
    oracle) are drawn on its model in a stage of their own. ``judge``: overrides of the
    ``judge`` section for the axis's judge, which must be at least as large and trained at least as
    long as the largest generator it scores. ``launcher``: what starts its training and sampling
    stages, ``python`` or ``torchrun ...`` (the processes share the work and write what one would)."""

    points: dict[str, Overrides]
    models: dict[str, Variant]
    ceiling: Ceiling
    judge: Overrides
    nfe_budgets: list[int] = Field(min_length=1)
    num_samples: int = Field(ge=2)  # the report draw's texts per temperature: what the intervals need
    launcher: str = Field(pattern=r"^(python|torchrun)( .+)?$")

    @model_validator(mode="after")
    def _names(self) -> "ScaleSection":
        bad = [n for n in (*self.points, *self.models) if not n.replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"{bad[0]!r} cannot name a scale point or model (letters, digits, underscores)")
        for where, overrides in self.points.items():
            _check_overrides(f"points.{where}", overrides)
        wrong = sorted(set(self.judge) - {"model", "train"})
        if wrong:
            raise ValueError(f"judge.{wrong[0]}: the axis's judge overrides only the judge's model and train")
        if self.points and "generator_only" not in self.models:
            raise ValueError("models: the axis needs a model named generator_only (overrides {train: {alpha: 0.0}}): "
                             "every point's generator cost and compute are measured against it, and a post-hoc "
                             "critic (frozen_generator: generator_only) freezes its point's")
        if "ceiling" in self.models:
            raise ValueError("models.ceiling: 'ceiling' names where each point's ceiling rows are written "
                             "(results/scale/samples/<point>/ceiling), not a model")
        if not self.points:  # a copy for one run (Params.with_overrides) carries no axis of its own
            return self
        if self.ceiling.model not in self.models:
            raise ValueError(f"ceiling.model: {self.ceiling.model!r} is not a model of scale.models "
                             f"({', '.join(self.models)}): the ceiling is drawn on one of the axis's models")
        shared = sorted(set(self.ceiling.policies) & set(self.models[self.ceiling.model].policies))
        if shared:
            raise ValueError(f"ceiling.policies.{shared[0]}: also a row of models.{self.ceiling.model}.policies; a row "
                             "is drawn by one stage (the ceiling's own, or its model's)")
        return self


class EvaluateSamplesSection(_Section):
    bootstrap_resamples: int = Field(ge=100)
    confidence_level: float = Field(gt=0.5, lt=1)
    seed: int = Field(ge=0)


class NotebooksSection(_Section):
    """Parameters the notebook stages pass to papermill (the notebooks read only artifacts)."""

    seed: int = Field(ge=0)
    num_examples: int = Field(ge=1, le=64)
    steps: int = Field(ge=2)  # sampler steps of notebook 01's trajectories
    nfe: int = Field(ge=2)  # notebook 04: side-by-side samples and trajectories at this NFE budget
    passage_length: int = Field(ge=8)  # notebook 03: characters of test text shown through the critic
    cell_timeout: int = Field(ge=10)  # seconds a cell may run before the stage fails


class AblationSection(_Section):
    """Critic levers, one at a time: each arm continues ``models/multitask`` for ``steps`` steps
    with its overrides of the ``model``, ``train`` and ``critic`` sections (``baseline``: none)."""

    arms: dict[str, Overrides] = Field(min_length=1)
    steps: int = Field(ge=1)
    lr: float = Field(gt=0, le=1)
    eval_windows: int = Field(ge=2)
    rollout_steps: int = Field(ge=2)
    policies: list[PolicyName] = Field(min_length=1)
    nfe: int = Field(ge=2)
    num_samples: int = Field(ge=2)
    seed: int = Field(ge=0)
    committed_budgets: list[Annotated[float, Field(ge=0, le=1)]]  # the pools an arm's open rows search

    @model_validator(mode="after")
    def _arm_names(self) -> "AblationSection":
        for name, overrides in self.arms.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"arms: arm name {name!r} must be letters, digits and underscores")
            _check_overrides(f"arms.{name}", overrides)
        if "confidence" not in self.policies:
            raise ValueError("policies must hold confidence, the baseline every arm is compared with")
        return self


class Params(_Section):
    data: DataSection
    model: ModelSection
    train: TrainSection
    critic: CriticSection
    judge: JudgeSection
    evaluate_critic: EvaluateCriticSection
    sample: SampleSection
    evaluate_samples: EvaluateSamplesSection
    notebooks: NotebooksSection
    ablation: AblationSection
    study: StudySection
    scale: ScaleSection

    @model_validator(mode="after")
    def _notebook_budget(self) -> "Params":
        for key, grid in (("sample", self.sample), ("study.sample", self.study.sample)):
            if self.notebooks.nfe not in grid.nfe_budgets:
                raise ValueError(
                    f"notebooks.nfe ({self.notebooks.nfe}) must be one of {key}.nfe_budgets {grid.nfe_budgets}: "
                    "notebook 04 shows the samples drawn at that budget"
                )
        overridden = [(f"ablation.arms.{arm}", o) for arm, o in self.ablation.arms.items() if o]
        overridden += [(f"study.variants.{name}.overrides", v.overrides) for name, v in self.study.variants.items()]
        overridden += [(f"scale.points.{point}, scale.models.{name}", overlay(o, v.overrides))
                       for point, o in self.scale.points.items() for name, v in self.scale.models.items()]
        for where, overrides in overridden:
            try:
                self.with_overrides(overrides)
            except ValidationError as exc:
                raise ValueError(f"{where}: " + "; ".join(_describe(e) for e in exc.errors())) from None
        return self

    @model_validator(mode="after")
    def _ablation_seed(self) -> "Params":
        if self.ablation.seed == self.sample.tuning_seed:
            raise ValueError(f"ablation.seed must differ from sample.tuning_seed ({self.sample.tuning_seed}): the "
                             "arms' report draw would repeat the draw their knobs are tuned on")
        return self

    def for_tier(self, tier: Tier) -> "Params":
        """These params with the ``sample`` grid of ``tier`` (``quick``: as they are)."""
        if tier == "quick":
            return self
        return self.model_copy(update={"sample": self.sample.model_copy(update=dict(self.study.sample))})

    def for_variant(self, variant: str) -> "Params":
        """These params with the overrides of study variant ``variant`` applied."""
        return self.with_overrides(self.study.variants[variant].overrides)

    def for_scale(self, point: str, model: str) -> "Params":
        """These params at scale point ``point`` with the overrides of the axis's model ``model``."""
        return self.with_overrides(overlay(self.scale.points[point], self.scale.models[model].overrides))

    def scale_grid(self) -> "Params":
        """The study's sampling settings at the scale axis's NFE budgets and report texts: what every
        axis row is tuned and drawn with."""
        study = self.for_tier("study")
        return study.model_copy(update={"sample": study.sample.with_(nfe_budgets=self.scale.nfe_budgets,
                                                                     num_samples=self.scale.num_samples)})

    def scale_judge(self) -> JudgeSection:
        """The scale axis's judge: the ``judge`` section with ``scale.judge``'s overrides, refused
        unless at least as large (layers x width squared) and trained at least as long as every
        generator of the axis. Checked where the axis runs, not when params load: a smaller
        ``judge`` section for the quick tier is no error of the axis's."""
        judge = JudgeSection.model_validate(overlay(self.judge.model_dump(), self.scale.judge, JudgeSection))
        for point in self.scale.points:
            generator = self.for_scale(point, "generator_only")
            if judge.train.max_steps < generator.train.max_steps or \
                    judge.model.n_layer * judge.model.n_embd ** 2 < generator.model.n_layer * generator.model.n_embd ** 2:
                raise ConfigError(f"scale.judge: the axis's judge ({judge.model.n_layer} layers of {judge.model.n_embd}, "
                                  f"{judge.train.max_steps} steps) must be at least as large and trained at least as "
                                  f"long as the generators it scores (point {point}: {generator.model.n_layer} of "
                                  f"{generator.model.n_embd}, {generator.train.max_steps} steps)")
        return judge

    def for_arm(self, arm: str) -> "Params":
        """These params with the overrides of ablation arm ``arm`` applied."""
        return self.with_overrides(self.ablation.arms[arm])

    def with_overrides(self, overrides: Overrides) -> "Params":
        """These params with ``overrides`` (section -> key -> value) applied, validated; the copy has
        no arms, variants or scale points of its own (validating them would override again)."""
        raw = overlay(self.model_dump(), overrides)
        raw["ablation"]["arms"] = {"baseline": {}}
        raw["study"]["variants"] = {}
        raw["scale"]["points"], raw["scale"]["models"] = {}, {}
        return Params.model_validate(raw)


def overlay(raw: Mapping[str, Any], changes: Mapping[str, Any], schema: type[BaseModel] = Params) -> dict[str, Any]:
    """``raw`` params with ``changes`` laid over them: a section (a nested group of keys, such as
    ``train`` or ``study.sample.tuning``) is merged key by key; any other value, a grid's rows or the
    ablation's arms included, is replaced whole. ``dvc exp run -S`` edits params.yaml the same way."""
    out = dict(raw)
    for key, value in changes.items():
        field = schema.model_fields.get(key)
        inner = field.annotation if field is not None else None
        if isinstance(inner, type) and issubclass(inner, BaseModel) and isinstance(value, Mapping) \
                and isinstance(out.get(key), Mapping):
            out[key] = overlay(out[key], value, inner)
        else:
            out[key] = value
    return out


_TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
    "list_type": "a list",
}


def _describe(error: dict[str, Any]) -> str:
    """Turn one pydantic error into ``key.path must be ..., got value``."""
    key = ".".join(str(part) for part in error["loc"]) or "<top level>"
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"{key} must be {bounds[kind]} {limit}, got {got!r}"
    if kind == "missing":
        return f"{key} is missing (params.yaml is the one source of values: every key is set there)"
    if kind == "extra_forbidden":
        return f"{key} is not a known key (check its spelling and section)"
    if kind == "literal_error":
        return f"{key} must be one of {ctx.get('expected')}, got {got!r}"
    if kind in _TYPE_WORDS:
        return f"{key} must be {_TYPE_WORDS[kind]}, got {got!r} ({type(got).__name__})"
    if kind == "value_error":
        return f"{key}: {error['msg'].removeprefix('Value error, ')}" if error["loc"] else error["msg"].removeprefix("Value error, ")
    return f"{key}: {error['msg']}, got {got!r}"


def parse_params(raw: Any, origin: str = "params") -> Params:
    """Validate an already-parsed mapping; raise :class:`ConfigError` naming every bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError(f"{origin}: " + "; ".join(lines)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, origin=str(path))
