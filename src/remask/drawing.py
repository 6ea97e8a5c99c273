"""Drawing tokens from the generator: the leaf every other module samples through.

Training (critic targets, the self-correcting generator's replacements), validation, detection,
the judge and the sampler all draw here, so that "fill the masked positions and read the
probability of what was drawn" is one piece of code. It imports nothing of this project: editing
a re-masking policy or the sampler's loop (:mod:`remask.policies`, :mod:`remask.sampling`)
leaves every training stage's dependencies untouched.

Sampling is in float64 (low precision distorts the tail) by the inverse CDF, from uniforms that
are either drawn from a ``torch.Generator`` (:func:`fill`, :func:`sample_tokens`) or given
(:func:`sample_from_logits`: every DDP rank takes its slice of one global batch's noise).
"""

from __future__ import annotations

import torch


def tempered_probs(logits: torch.Tensor, temperature: float | torch.Tensor, top_p: float) -> torch.Tensor:
    """Sampling distribution in float64: temperature, then nucleus (top-p) truncation."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Draw one token per row of ``probs`` from given uniforms in [0, 1); exact in float64."""
    cdf = probs.double().cumsum(-1)
    return (cdf < uniform.unsqueeze(-1) * cdf[..., -1:]).sum(-1).clamp_(max=probs.size(-1) - 1)


def sample_from_logits(logits: torch.Tensor, uniform: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Sample in float64, driven by pre-drawn uniforms so that every DDP rank of a training run can
    take its slice of the global batch's noise."""
    return inverse_cdf(tempered_probs(logits, temperature, 1.0), uniform)


def sample_tokens(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs``, its uniforms drawn from ``generator`` (on the CPU, so that a
    seed gives the same draw on every device)."""
    uniform = torch.rand(probs.shape[:-1], generator=generator, dtype=torch.float64).to(probs.device)
    return inverse_cdf(probs, uniform)


def token_probs(probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The probability ``probs`` gives each token of ``tokens`` (``(..., V)`` and ``(...)``)."""
    return probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def fill(probs: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor,
         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw every ``masked`` position of ``tokens`` from ``probs`` and read the probability of each
    current token: ``(filled tokens, p)``. A draw is made at every position (masked or not), so the
    generator's stream does not depend on the mask."""
    filled = torch.where(masked, sample_tokens(probs, generator).to(tokens.device), tokens)
    return filled, token_probs(probs, filled)


def top_k_per_row(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the ``k[row]`` highest scores of each row; nan scores are never chosen."""
    order = torch.nan_to_num(scores, nan=float("-inf")).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(scores.size(1), device=scores.device).expand_as(order))
    return rank < k[:, None]
