"""A small transformer with two heads on one body: the Generator and the Critic.

nanoGPT-style pre-LayerNorm blocks with ``scaled_dot_product_attention`` and rotary position
embeddings. Bidirectional by default (a masked diffusion denoiser); ``causal=True`` makes the
same class an autoregressive character model, used as the independent judge of samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

Head = Literal["lm", "critic", "both"]
MASK_LOGIT = -1.0e4
CRITIC_PARAMETERS = ("critic_head.", "critic_blocks.")  # names of the critic's own tensors (critic_logits)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    mask_id: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.0
    rope_base: float = 10000.0
    causal: bool = False
    critic_head: Literal["linear", "mlp"] = "linear"
    critic_layers: int = 0  # blocks of the critic's own on top of the shared body (0 before this key existed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**raw)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every position, ``(B, T)``, from logits ``(B, T, V)`` in float32.

    Computed on the flattened batch: ``torch.compile`` on CUDA (inductor, torch 2.11) fails to
    build the backward of ``cross_entropy`` on a transposed ``(B, V, T)`` view.
    """
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)


class Rotary(nn.Module):
    """Rotary position embedding: rotates channel pairs (0, 1), (2, 3), ... by position-dependent angles.

    The rotations are one complex multiplication by a table computed once per length: about 6x
    faster on a CPU than rotating real pairs with a stack per call (``benchmarks/train_step.py``).
    """

    def __init__(self, head_dim: int, base: float, max_length: int):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_length, dtype=torch.float32), inv_freq)
        # exp(i * position * inv_freq), (max_length, head_dim / 2) complex64; rebuilt, not saved
        self.register_buffer("rotations", torch.polar(torch.ones_like(angles), angles), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotates ``q`` and ``k`` laid out ``(B, T, n_head, head_dim)``."""
        rotations = self.rotations[: q.size(1), None, :]
        return _rotate(q, rotations), _rotate(k, rotations)


def _rotate(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotations).flatten(-2).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.causal, self.dropout = cfg.n_head, cfg.causal, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.rotary = Rotary(cfg.n_embd // cfg.n_head, cfg.rope_base, cfg.block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """q, k and v stay ``(B, T, n_head, head_dim)``, the layout the CPU flash-attention kernel
        works in, and reach it as transposed views: the backward then stacks their gradients
        straight into the ``qkv`` projection's layout, where a ``(B, n_head, T, head_dim)`` permute
        cost a full copy of them per layer (same numbers, about 1% of a training step on a CPU)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).unbind(2)
        q, k = self.rotary(q, k)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False),
            nn.GELU(),
            nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class DiffusionTransformer(nn.Module):
    """Shared body; ``lm_head`` (Generator, tied to the embedding) and ``critic_head`` (Critic)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd {cfg.n_embd} is not divisible by n_head {cfg.n_head}")
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as in nanoGPT
        if cfg.critic_head == "mlp":
            self.critic_head = nn.Sequential(nn.Linear(cfg.n_embd, cfg.n_embd), nn.GELU(), nn.Linear(cfg.n_embd, 1))
        else:
            self.critic_head = nn.Linear(cfg.n_embd, 1)
        self._init(self)
        # built and drawn after everything else, so that a model without them draws the same weights as before
        self.critic_blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.critic_layers))
        self._init(self.critic_blocks)

    def _init(self, module: nn.Module) -> None:
        """GPT-2's initialisation of ``module``, the residual projections scaled by the depth."""
        module.apply(self._init_weights)
        for name, param in module.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def body(self, idx: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``(B, T, n_embd)`` after the last LayerNorm."""
        x = self.drop(self.wte(idx))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def lm_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Generator logits of hidden states ``(..., n_embd)``: training applies it to the masked
        positions only. [MASK] is never a prediction (nor in the judge's data); a large finite
        value, not -inf, keeps p * log(p) at 0."""
        logits = self.lm_head(x)
        return logits.index_fill(-1, torch.tensor([self.config.mask_id], device=x.device), MASK_LOGIT)

    def critic_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Critic logits ``(B, T)`` of the body's hidden states ``(B, T, n_embd)``: through the
        critic's own blocks (``critic_layers``; a post-hoc critic trains them on a frozen body),
        then its head. The generator never reads them, so the fill pass still yields both heads."""
        for block in self.critic_blocks:
            x = block(x)
        return self.critic_head(x).squeeze(-1)

    def forward(
        self, idx: torch.Tensor, head: Head = "lm", detach_critic: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``lm``: logits ``(B, T, V)``; ``critic``: error logits ``(B, T)``; ``both``: the pair.

        ``detach_critic`` stops the critic's gradient at the head, so it cannot shape the body.
        """
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence of {idx.size(1)} tokens is longer than block_size {self.config.block_size}")
        x = self.body(idx)
        if head == "lm":
            return self.lm_logits(x)
        critic = self.critic_logits(x.detach() if detach_critic else x)
        if head == "critic":
            return critic
        if head == "both":
            return self.lm_logits(x), critic
        raise ValueError(f"unknown head {head!r}; expected 'lm', 'critic' or 'both'")
