"""How suspect each character of a given text is: the scores ``remask score`` prints.

A text longer than the model's block is read in overlapping windows (half a block apart), and each
character is scored in the window where it sits closest to the centre, so that every character has
context on both sides where the text allows it.

Two scores, both "probability that this character is an error":

- ``loo``: 1 - the generator's leave-one-out probability of the character given every other
  character of its window (:func:`remask.policies.leave_one_out_probs`, the ``oracle_loo`` ceiling's
  score), one forward pass per scored character;
- ``critic``: the critic head's error probability, one forward pass per window; it was trained on
  sampler states, whose base rate of errors is high, so on clean text it is high almost everywhere
  and ranks rather than measures.

:func:`best_score` picks between them by measurement: the refreshed-target AUROC of
``evaluate_critic`` (``results/evaluate_critic/metrics.json``) for the checkpoint it measured.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import torch

from remask.data import CharTokenizer
from remask.model import DiffusionTransformer
from remask.policies import leave_one_out_probs
from remask.runtime import autocast

# score -> the refreshed-target table's row that measures it (evaluate_critic's pooled AUROC)
MEASURED_AS = {"loo": "oracle_loo", "critic": "critic"}
COST = {"loo": "one forward pass per character", "critic": "one forward pass per window"}


def windows(length: int, block: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the windows that cover ``length`` characters, half a block apart."""
    if length <= block:
        return [(0, length)]
    stride = max(block // 2, 1)
    starts = list(range(0, length - block + 1, stride))
    if starts[-1] != length - block:
        starts.append(length - block)
    return [(s, s + block) for s in starts]


def owners(length: int, spans: list[tuple[int, int]]) -> list[int]:
    """For each position, the index of the window (of ``spans``, in order) whose centre is nearest
    to it (the earlier one on a tie); that window always contains it."""
    centres = [(s + e - 1) / 2 for s, e in spans]
    out, i = [], 0
    for position in range(length):
        while (i + 1 < len(spans) and spans[i + 1][0] <= position
               and abs(position - centres[i + 1]) < abs(position - centres[i])):
            i += 1
        out.append(i)
    return out


WINDOWS_PER_PASS = 64  # windows scored together (the leave-one-out score stacks 16 copies of each)


@torch.no_grad()
def _window_scores(model: DiffusionTransformer, windows: torch.Tensor, score: str) -> torch.Tensor:
    """Error probabilities of every character of equal-length windows ``(W, L)``, float64 on the CPU."""
    device = next(model.parameters()).device
    windows = windows.to(device)
    if score == "critic":
        with autocast(device):
            return torch.sigmoid(model(windows, head="critic").float()).double().cpu()

    def forward_lm(seqs: torch.Tensor, copies: int) -> torch.Tensor:
        with autocast(device):
            return model(seqs, head="lm").float()

    scored = torch.ones_like(windows, dtype=torch.bool)
    return (1.0 - leave_one_out_probs(forward_lm, windows, scored, model.config.mask_id)).cpu()


def error_scores(model: DiffusionTransformer, ids: list[int], score: str) -> list[float]:
    """Every character's error probability under ``score`` (``loo`` or ``critic``)."""
    if score not in MEASURED_AS:
        raise ValueError(f"unknown score {score!r}; valid: {', '.join(MEASURED_AS)}")
    spans = windows(len(ids), model.config.block_size)
    tokens = torch.tensor([ids[s:e] for s, e in spans])  # every window has the same length
    per_window = torch.cat([_window_scores(model, tokens[i : i + WINDOWS_PER_PASS], score)
                            for i in range(0, len(tokens), WINDOWS_PER_PASS)])
    return [float(per_window[i, position - spans[i][0]]) for position, i in enumerate(owners(len(ids), spans))]


def measured_aurocs(metrics_path: Path) -> dict[str, float]:
    """The refreshed-target AUROC of each score, from ``evaluate_critic``'s metrics (empty if absent)."""
    if not metrics_path.is_file():
        return {}
    pooled = json.loads(metrics_path.read_text(encoding="utf-8")).get("refreshed", {}).get("pooled", {})
    return {score: pooled[row]["auroc"] for score, row in MEASURED_AS.items() if row in pooled}


def best_score(measured: dict[str, float], critic_trained: bool) -> str:
    """The score with the highest measured AUROC among those the checkpoint can give; ``loo`` (the
    generator alone) where nothing was measured."""
    usable = {s: a for s, a in measured.items() if s != "critic" or critic_trained}
    return max(usable, key=usable.get) if usable else "loo"


# characters that often stand for ones a plain-text vocabulary has
SUBSTITUTES = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
               "\u2026": "...", "\u00a0": " "}


def map_unknown(text: str, tokenizer: CharTokenizer, fallback: str) -> tuple[str, dict[str, str]]:
    """``text`` with every character outside the vocabulary replaced, one for one: typographic quotes
    and dashes by their plain forms, accented letters by the letter without its accent, anything
    else by ``fallback``. Returns the text and ``{unknown: replacement}``, so the caller can report
    them. The length never changes (a replacement longer than one character falls back)."""
    replaced: dict[str, str] = {}
    for char in tokenizer.unknown(text):
        candidate = SUBSTITUTES.get(char) or unicodedata.normalize("NFKD", char)[:1]
        replaced[char] = candidate if len(candidate) == 1 and candidate in tokenizer.stoi else fallback
    return "".join(replaced.get(c, c) for c in text), replaced


def top_spans(scores: list[float], count: int, text: str) -> list[tuple[int, int, float]]:
    """The ``count`` most suspect characters, as ``(start, end, score)`` spans over ``text`` in
    reading order; neighbours among them are joined into one span (their highest score)."""
    chosen = sorted(sorted(range(len(scores)), key=lambda i: -scores[i])[:count])
    spans: list[list] = []
    for i in chosen:
        if spans and spans[-1][1] == i:
            spans[-1][1], spans[-1][2] = i + 1, max(spans[-1][2], scores[i])
        else:
            spans.append([i, i + 1, scores[i]])
    return [(s, e, p) for s, e, p in spans]
