"""Scores as detectors of bad tokens, against scores that need no training, on two targets.

**The refreshed target** (:func:`refreshed_scores`): on a sampler's own states, a token is
implausible when the judge's leave-one-out probability of it given every other token is low.
That is what re-masking should find (a token that does not fit the rest of the *current*
sequence), it comes from an independent model, and the stale confidence, fixed when the token
was filled, cannot see it. The generator's own leave-one-out probability is its oracle.

**The seed's target**, "differs from the clean text", on two kinds of input:

- **one-step fills**: a share ``r`` of each test window is masked and filled by one sample from
  the generator; an error is a filled token that differs from the test text;
- **sampler states**: ``diffusion_generate`` infills a share of each test window (the rest is
  protected, so the truth is known); after the fill of every step but the last, each
  non-protected token is labelled an error where it differs from the test text. Here the
  heuristic's score for a token committed in an earlier step is the confidence it had when it
  was filled (stale), which is where a critic can know better.

Why the label limits any critic: the sampler's tokens are drawn from the model given the
protected text only, so they carry no information about the hidden test text beyond it. The best
possible score for "differs from the test text" is therefore ``1 - P(test token = current token |
protected text)`` whatever else a detector sees; on a one-step fill that is what the heuristic
``1 - p`` estimates. On sampler states the model's estimate of it is ``first_pass``: 1 - p of the
current token in one pass over the state with every non-protected position masked (no training;
the same pass for every step of a window). If the argument holds, ``first_pass`` ranks errors at
least as well as the stale confidence and the critic; :func:`remask.metrics.added_information`
measures what the critic adds to the heuristic.

Scores (higher: more likely an error): ``critic`` = sigmoid(critic logit); ``confidence`` =
1 - p(sampled token); ``entropy`` of the predictive distribution (nats); ``margin`` = 1 - (p1 - p2),
the top-2 margin. On sampler states also ``critic_fused``, the score the ``critic_fused`` policy
ranks by: the critic head of the step's fill pass (run on the state with its masks) for tokens
committed earlier, 1 - p for the tokens just filled. Entropy and margin are no probabilities, so
they get no calibration error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from remask.data import CharTokenizer
from remask.judge import judge_leave_one_out
from remask.metrics import detection_metrics, pr_points, reliability_table, roc_points
from remask.model import DiffusionTransformer
from remask.drawing import fill, tempered_probs, token_probs
from remask.policies import POLICIES, StepState, leave_one_out_probs
from remask.runtime import autocast
from remask.sampling import Known, SamplerOptions, diffusion_generate

PROBABILITY_SCORES = {"critic": True, "confidence": True, "critic_fused": True, "first_pass": True, "entropy": False,
                      "margin": False}
ONE_STEP_SCORES = ("critic", "confidence", "entropy", "margin")


@torch.no_grad()
def fill_once(
    model: DiffusionTransformer, clean: torch.Tensor, ratio: float, temperature: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask ``round(ratio * length)`` random positions of each row and fill them with one sample.

    Returns the mask, the filled sequences and the sampling distribution ``(B, T, V)``.
    """
    device = clean.device
    n_mask = max(1, round(ratio * clean.size(1)))
    order = torch.rand(clean.shape, generator=generator).argsort(dim=1).to(device)
    masked = torch.zeros_like(clean, dtype=torch.bool).scatter_(1, order[:, :n_mask], True)
    with autocast(device):
        logits = model(clean.masked_fill(masked, model.config.mask_id)).float()
    probs = tempered_probs(logits, temperature, 1.0)
    filled, _ = fill(probs, clean, masked, generator)
    return masked, filled, probs


@torch.no_grad()
def one_step_scores(
    model: DiffusionTransformer, windows: torch.Tensor, ratio: float, temperature: float, seed: int,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Labels and every score for the filled positions of one-step fills at mask ratio ``ratio``."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("label", *ONE_STEP_SCORES)}
    for start in range(0, len(windows), batch_size):
        clean = windows[start : start + batch_size].to(device)
        masked, filled, probs = fill_once(model, clean, ratio, temperature, generator)
        with autocast(device):
            critic = torch.sigmoid(model(filled, head="critic").float().double())
        top2 = probs.topk(2, dim=-1).values
        scores = {
            "label": (filled != clean).double(),
            "critic": critic,
            "confidence": 1.0 - token_probs(probs, filled),
            "entropy": -(probs * probs.clamp_min(1e-300).log()).sum(-1),
            "margin": 1.0 - (top2[..., 0] - top2[..., 1]),
        }
        for name, value in scores.items():
            parts[name].append(value[masked].cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def _no_extra_pass(tokens: torch.Tensor) -> torch.Tensor:
    raise AssertionError("a one-pass score of a state asked for a pass of its own")


@torch.no_grad()
def state_scores(model: DiffusionTransformer, tokens: torch.Tensor, just_filled: torch.Tensor,
                 p_at_fill: torch.Tensor) -> dict[str, torch.Tensor]:
    """The one-pass scores of a sampler state (after a step's fill), on the CPU in float64:
    ``critic`` (its own pass on the state), ``confidence`` (stale: 1 - p when each token was
    filled), ``critic_fused`` (what the ``critic_fused`` policy ranks by: the critic head of the
    fill pass, whose input had the just-filled positions masked, for committed tokens) and
    ``self_planning`` (1 - p of every current token in that fill pass, at temperature 1; it means
    something only for a self-correcting generator)."""
    device = next(model.parameters()).device
    on_device = tokens.to(device)
    with autocast(device):
        critic = torch.sigmoid(model(on_device, head="critic").float()).cpu().double()
        lm, in_fill = model(on_device.masked_fill(just_filled.to(device), model.config.mask_id), head="both")
    p_fill_pass = token_probs(torch.softmax(lm.double(), -1), on_device).cpu()
    p_at_fill = p_at_fill.cpu().double()

    def policy_score(policy: str, p_current: torch.Tensor) -> torch.Tensor:
        """The registered policy's own score of the state (no pass of its own: the fill pass's
        critic head and probabilities are given)."""
        state = StepState(tokens, just_filled.cpu(), torch.zeros_like(just_filled.cpu()), p_current, p_at_fill,
                          torch.Generator(), _no_extra_pass, torch.sigmoid(in_fill.float()).cpu().double())
        return POLICIES[policy].score(state)

    return {"critic": critic,
            "confidence": policy_score("remdm_conf", p_at_fill),  # stale: 1 - p when each token was filled
            "critic_fused": policy_score("critic_fused", p_at_fill),  # just filled: 1 - p when filled
            "self_planning": policy_score("self_planning", p_fill_pass)}  # the fill pass at temperature 1


@torch.no_grad()
def rollout_scores(model: DiffusionTransformer, windows: torch.Tensor, ratio: float, options: SamplerOptions,
                   seed: int) -> dict[str, np.ndarray]:
    """Labels, critic, stale-confidence and first-pass scores on the intermediate states of real
    infilling runs of the sampler (``options``: its policy, steps, temperature, batch size...) in
    which a share ``ratio`` of each test window is unknown."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    protected = torch.rand(windows.shape, generator=generator) >= ratio
    result = diffusion_generate(model, len(windows), windows.size(1), options, seed=seed,
                                known=Known(windows, protected), record_trajectory=True)
    temperature, batch_size = options.temperature, options.batch_size
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("label", "critic", "confidence", "critic_fused", "first_pass",
                                                          "step")}
    free = ~protected
    first_pass = []  # (N, L, V) distributions given the protected text only
    for start in range(0, len(windows), batch_size):
        rows = slice(start, start + batch_size)
        with autocast(device):
            logits = model(windows[rows].to(device).masked_fill(free[rows].to(device), model.config.mask_id)).float()
        first_pass.append(tempered_probs(logits, temperature, 1.0).cpu())
    first_pass = torch.cat(first_pass)
    for i, state in enumerate(result.trajectory[:-1]):  # the states re-masking decisions are made on
        for start in range(0, len(windows), batch_size):
            rows = slice(start, start + batch_size)
            scores = state_scores(model, state.tokens[rows], state.masked[rows], state.p_at_fill[rows])
            keep = free[rows]
            parts["label"].append((state.tokens[rows] != windows[rows])[keep].double().numpy())
            for name in ("critic", "confidence", "critic_fused"):
                parts[name].append(scores[name][keep].numpy())
            p_first = first_pass[rows].gather(-1, state.tokens[rows].unsqueeze(-1)).squeeze(-1)
            parts["first_pass"].append((1.0 - p_first)[keep].numpy())
            parts["step"].append(np.full(int(keep.sum()), i))
    return {k: np.concatenate(v) for k, v in parts.items()}


def summarise(scores: dict[str, np.ndarray], bins: int) -> dict[str, dict]:
    """Detection metrics of every score present in ``scores``."""
    return {
        name: detection_metrics(scores[name], scores["label"], PROBABILITY_SCORES[name], bins)
        for name in PROBABILITY_SCORES
        if name in scores
    }


def curves(scores: dict[str, np.ndarray], bins: int) -> dict[str, dict[str, list[dict]]]:
    """Plot data: ``roc`` and ``pr`` points of every score, ``reliability`` rows of the probability scores.

    ROC and precision-recall curves need both classes; where one is missing they are left out.
    """
    names = [n for n in PROBABILITY_SCORES if n in scores]
    labels = scores["label"]
    both = 0 < labels.sum() < labels.size
    return {
        "roc": {n: roc_points(scores[n], labels) for n in names} if both else {},
        "pr": {n: pr_points(scores[n], labels) for n in names} if both else {},
        "reliability": {n: reliability_table(scores[n], labels, bins) for n in names if PROBABILITY_SCORES[n]},
    }


REFRESHED_SCORES = ("confidence", "critic", "critic_fused", "oracle_loo")
STATE_KEYS = ("tokens", "just_filled", "p_at_fill")  # what rescore_states needs of a labelled state


@dataclass(frozen=True)
class StateDraw:
    """Which sampler states the refreshed target labels: ``num_samples`` unconditional samples of
    ``length`` tokens drawn on ``seed``, at the fill of each step of ``state_steps``; in each,
    ``positions`` of its tokens chosen at random (``None``: every token). The judge's label costs
    a pass per character per labelled position, so a subset buys more samples, and the intervals
    over samples narrow with samples, not with tokens per sample."""

    num_samples: int
    length: int
    state_steps: tuple[int, ...]
    seed: int
    positions: int | None = None

    def __post_init__(self) -> None:
        if self.positions is not None and not 1 <= self.positions <= self.length:
            raise ValueError(f"positions must lie in [1, {self.length}], got {self.positions}")

    def labelled(self, rng: np.random.Generator) -> np.ndarray | None:
        """The positions of one state's sample to label, sorted (``None``: all)."""
        return None if self.positions is None else np.sort(rng.choice(self.length, self.positions, replace=False))


@torch.no_grad()
def refreshed_scores(model: DiffusionTransformer, judge: DiffusionTransformer, tokenizer: CharTokenizer,
                     options: SamplerOptions, draw: StateDraw, progress: bool = False) -> dict[str, np.ndarray]:
    """Scores against the refreshed target on a sampler's own states: unconditional samples of
    ``options`` (policy, steps...), at the fill of each step of ``draw.state_steps`` (``steps - 1``:
    the final samples).

    Every token (or ``draw.positions`` of each sample's, at random; the others' ``p_judge`` is nan
    and :func:`summarise_refreshed` leaves them out) is labelled by the judge's leave-one-out
    probability ``p_judge`` of it given all other tokens of the state
    (:func:`remask.judge.judge_leave_one_out`): an independent model's view of "implausible given
    the rest of the current sequence", which the stale confidence, fixed when the token was filled,
    cannot see. Scores: the one-pass scores of
    :func:`state_scores` and ``oracle_loo``, 1 - the generator's own leave-one-out probability
    (:func:`remask.policies.leave_one_out_probs`, one pass per position: a ceiling, not a contender).
    """
    steps, num_samples, length = options.steps, draw.num_samples, draw.length
    if not all(0 <= s < steps for s in draw.state_steps):
        raise ValueError(f"state_steps must lie in [0, {steps - 1}], got {list(draw.state_steps)}")
    device = next(model.parameters()).device
    result = diffusion_generate(model, num_samples, length, options, seed=draw.seed, record_trajectory=True)

    def forward_lm(seqs: torch.Tensor, copies: int) -> torch.Tensor:
        with autocast(device):
            return model(seqs.to(device), head="lm").float()

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("p_judge", *REFRESHED_SCORES, "step", "sample", *STATE_KEYS)}
    rng = np.random.default_rng(draw.seed)
    for step in draw.state_steps:
        state = result.trajectory[step]
        scores = state_scores(model, state.tokens, state.masked, state.p_at_fill)
        loo = leave_one_out_probs(forward_lm, state.tokens.to(device), torch.ones_like(state.masked, device=device),
                                  model.config.mask_id)
        scores["oracle_loo"] = 1.0 - loo.cpu()
        for row in range(num_samples):
            text = tokenizer.decode(state.tokens[row].tolist())
            probs = judge_leave_one_out(judge, tokenizer, text, progress=progress, positions=draw.labelled(rng))
            parts["p_judge"].append(probs.gather(-1, state.tokens[row].unsqueeze(-1).to(probs.device)).squeeze(-1)
                                    .cpu().numpy())
            for name in REFRESHED_SCORES:
                parts[name].append(scores[name][row].numpy())
            parts["step"].append(np.full(length, step))
            parts["sample"].append(np.full(length, row))  # the bootstrap's unit: a sample's tokens go together
            parts["tokens"].append(state.tokens[row].numpy())
            parts["just_filled"].append(state.masked[row].numpy())
            parts["p_at_fill"].append(state.p_at_fill[row].double().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


@torch.no_grad()
def rescore_states(model: DiffusionTransformer, saved: Mapping[str, np.ndarray], length: int,
                   names: Sequence[str]) -> dict[str, np.ndarray]:
    """Another model's one-pass scores ``names`` (of :func:`state_scores`) on the states that
    :func:`refreshed_scores` labelled (its output, e.g. reloaded from disk), so that every study
    variant is measured against the same judge labels."""
    tokens = torch.from_numpy(saved["tokens"]).long().view(-1, length)
    just_filled = torch.from_numpy(saved["just_filled"]).bool().view(-1, length)
    p_at_fill = torch.from_numpy(saved["p_at_fill"]).view(-1, length)
    scores = state_scores(model, tokens, just_filled, p_at_fill)
    return {name: scores[name].flatten().numpy() for name in names}


RANKING = ("auroc", "average_precision", "spearman")  # what the refreshed table measures of each score
STALE = "confidence"  # the refreshed table's reference score: fixed when the token was filled


def _ranking(score: np.ndarray, implausible: np.ndarray, surprisal: np.ndarray) -> dict[str, float]:
    """AUROC and average precision of ``score`` against ``implausible``, and its Spearman
    correlation with the judge's ``surprisal`` (nan where a class is missing)."""
    metrics = detection_metrics(score, implausible, is_probability=False)
    spearman = spearmanr(score, surprisal).statistic if score.size > 1 else float("nan")
    return {"auroc": metrics["auroc"], "average_precision": metrics["average_precision"],
            "spearman": float(spearman), "n": metrics["n"], "error_rate": metrics["error_rate"]}


def summarise_refreshed(scores: Mapping[str, np.ndarray], threshold: float, names: Sequence[str] = REFRESHED_SCORES,
                        resamples: int = 200, level: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Per score: AUROC and average precision against "implausible" (``p_judge < threshold``) and
    the Spearman correlation with the judge's surprisal ``-log p_judge``, each with a percentile
    interval ``<metric>_ci`` from a bootstrap over *samples* (``scores["sample"]``: a sample's
    tokens are resampled together, as they are not independent), and its difference from the stale
    ``confidence`` on the same resamples, ``<metric>_vs_confidence`` with ``..._ci``. Tokens the
    judge did not label (``p_judge`` nan: :class:`StateDraw` ``positions``) are left out."""
    labelled = np.isfinite(scores["p_judge"])
    scores = {k: v[labelled] for k, v in scores.items()}
    implausible = scores["p_judge"] < threshold
    surprisal = -np.log(np.clip(scores["p_judge"], 1e-300, 1.0))
    compared = [*names, *([STALE] if STALE in scores and STALE not in names else [])]
    out = {name: _ranking(scores[name], implausible, surprisal) for name in compared}
    members = [np.flatnonzero(scores["sample"] == g) for g in np.unique(scores["sample"])]
    rng = np.random.default_rng(seed)
    draws = {name: {m: [] for m in RANKING} for name in compared}
    for _ in range(resamples):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        for name in compared:
            value = _ranking(scores[name][idx], implausible[idx], surprisal[idx])
            for m in RANKING:
                draws[name][m].append(value[m])
    tail = 100 * (1 - level) / 2
    for name in compared:
        for m in RANKING:
            out[name][f"{m}_ci"] = _percentiles(np.array(draws[name][m]), tail)
            if STALE in out and name != STALE:
                out[name][f"{m}_vs_confidence"] = out[name][m] - out[STALE][m]
                out[name][f"{m}_vs_confidence_ci"] = _percentiles(
                    np.array(draws[name][m]) - np.array(draws[STALE][m]), tail)
    return {name: out[name] for name in names}


def _percentiles(values: np.ndarray, tail: float) -> list[float] | None:
    """The ``tail`` and ``100 - tail`` percentiles of the finite ``values`` (``None``: none is)."""
    finite = values[np.isfinite(values)]
    return None if finite.size == 0 else [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]