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
from remask.sampling import tempered_probs

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
