"""The causal judge: scores texts (negative log-likelihood, bits per character) and samples
unconditional reference text.

Every text is scored after one context character, the document separator ``"\\n"``, so the first
character is predicted too and every row (samples of any policy, the judge's own samples, the
test text) is scored the same way. Texts longer than the judge's window are scored in
consecutive windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm import tqdm

from remask.data import CharTokenizer
from remask.model import DiffusionTransformer, token_cross_entropy
from remask.runtime import autocast
from remask.drawing import tempered_probs

CONTEXT = "\n"


def _check(model: DiffusionTransformer) -> None:
    if not model.config.causal:
        raise ValueError("the judge must be a causal model (models/judge)")


@torch.no_grad()
def judge_nll_bits(
    model: DiffusionTransformer, tokenizer: CharTokenizer, texts: Sequence[str], batch_size: int = 64,
    progress: bool = False,
) -> list[float]:
    """Mean negative log-likelihood per character of each text, in bits."""
    _check(model)
    model.eval()
    device = next(model.parameters()).device
    window = model.config.block_size
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: dict[int, float] = {}
    for start in tqdm(range(0, len(order), batch_size), desc="judge", unit="batch", disable=not progress, leave=False):
        group = order[start : start + batch_size]
        encoded = [tokenizer.encode(CONTEXT + texts[i]) for i in group]
        length = max(len(e) for e in encoded)
        ids = torch.full((len(group), length), tokenizer.stoi[CONTEXT], dtype=torch.long)
        valid = torch.zeros(len(group), length - 1, dtype=torch.bool)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e)
            valid[row, : len(e) - 1] = True
        ids, valid = ids.to(device), valid.to(device)
        nll = torch.zeros(len(group), device=device, dtype=torch.float64)
        for lo in range(0, length - 1, window):
            chunk = ids[:, lo : lo + window + 1]
            with autocast(device):
                logits = model(chunk[:, :-1]).float()
            ce = token_cross_entropy(logits, chunk[:, 1:])
            nll += (ce * valid[:, lo : lo + chunk.size(1) - 1]).sum(1).double()
        for row, i in enumerate(group):
            results[i] = float(nll[row]) / max(int(valid[row].sum()), 1) / math.log(2)
    return [results[i] for i in range(len(texts))]


@torch.no_grad()
def judge_generate(
    model: DiffusionTransformer, tokenizer: CharTokenizer, num_samples: int, length: int, temperature: float = 1.0,
    seed: int = 0, progress: bool = False,
) -> list[str]:
    """Unconditional autoregressive samples (float64 sampling), each after the context character."""
    _check(model)
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((num_samples, 1), tokenizer.stoi[CONTEXT], dtype=torch.long, device=device)
    for _ in tqdm(range(length), desc="judge samples", unit="char", disable=not progress, leave=False):
        context = ids[:, -model.config.block_size :]
        with autocast(device):
            logits = model(context)[:, -1].float()
        probs = tempered_probs(logits, temperature, 1.0)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
        ids = torch.cat([ids, nxt], dim=1)
    return [tokenizer.decode(row[1:].tolist()) for row in ids.cpu()]


@torch.no_grad()
def judge_leave_one_out(
    model: DiffusionTransformer, tokenizer: CharTokenizer, text: str, batch_size: int = 256, progress: bool = False,
    positions: Sequence[int] | None = None,
) -> torch.Tensor:
    """``(L, C)`` float64: the judge's probability of every character at every position of
    ``text`` given all the other characters, exact by Bayes under the causal judge; only at
    ``positions`` where given (the other rows nan: a labelled subset costs its share of the passes).

    p(x_i = c | x_-i) is proportional to the joint probability of the text with c at i; the factors
    before i do not depend on c, so it is the softmax over c of the sum of log p(x_j | x_<j) for
    j >= i. Every candidate character (the tokenizer's characters, never ``[MASK]``) is scored at
    every labelled position: ``C`` judge passes a position, ``L * C`` for all. The text, after the
    judge's context character, must fit in one window: the rest of the window is the context on
    both sides.
    """
    _check(model)
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor(tokenizer.encode(CONTEXT + text), dtype=torch.long, device=device)
    if len(ids) - 1 > model.config.block_size:
        raise ValueError(f"a text of {len(text)} characters does not fit the judge's window of "
                         f"{model.config.block_size} after its context character")
    length, chars = len(text), len(tokenizer.chars)
    labelled = torch.arange(length, device=device) if positions is None else \
        torch.as_tensor(positions, dtype=torch.long, device=device)
    if labelled.numel() and not 0 <= int(labelled.min()) <= int(labelled.max()) < length:
        raise ValueError(f"positions must lie in [0, {length - 1}]")
    candidates = torch.arange(chars, device=device)
    log_joint = torch.empty(len(labelled) * chars, dtype=torch.float64, device=device)
    position = labelled.repeat_interleave(chars) + 1  # index in ids (after the context)
    char = candidates.repeat(len(labelled))
    for start in tqdm(range(0, len(labelled) * chars, batch_size), desc="judge leave-one-out", unit="batch",
                      disable=not progress, leave=False):
        rows = slice(start, start + batch_size)
        seqs = ids.repeat(len(position[rows]), 1)
        seqs[torch.arange(len(seqs), device=device), position[rows]] = char[rows]
        with autocast(device):
            logits = model(seqs[:, :-1]).float()
        logp = torch.log_softmax(logits.double(), dim=-1).gather(-1, seqs[:, 1:].unsqueeze(-1)).squeeze(-1)
        after = torch.arange(1, len(ids), device=device)[None, :] >= position[rows][:, None]  # targets j >= i
        log_joint[rows] = (logp * after).sum(1)
    out = torch.full((length, chars), float("nan"), dtype=torch.float64, device=device)
    out[labelled] = torch.softmax(log_joint.view(len(labelled), chars), dim=-1)
    return out
