"""Shared fixtures: a tiny corpus made by the tests themselves, and tiny configs.

``params.yaml`` is the one source of values (:mod:`remask.config` holds no defaults), so a test's
params are the repository's with the changes it tests laid over them (:func:`params_with`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from remask.config import Params, load_params, overlay, parse_params
from remask.data import Document, prepare

REPO = Path(__file__).resolve().parents[1]
REPO_PARAMS = load_params(REPO / "params.yaml")


def params_with(changes: dict, origin: str = "params") -> Params:
    """The repository's params with ``changes`` laid over them (sections merged key by key), validated."""
    return parse_params(overlay(REPO_PARAMS.model_dump(), changes), origin)


def write_params(path: Path, changes: dict) -> Path:
    """A complete params file, the repository's with ``changes``, as a stage reads it."""
    path.write_text(yaml.safe_dump(params_with(changes).model_dump(mode="json")))
    return path

WORDS = (
    "the king is dead long live the king to be or not to be that is the question "
    "what light through yonder window breaks it is the east and juliet is the sun "
    "all the world is a stage and all the men and women merely players"
).split()


def make_documents(count: int = 8, words_per_doc: int = 400, seed: int = 0) -> list[Document]:
    import random

    rng = random.Random(seed)
    docs = []
    for i in range(count):
        lines = []
        for _ in range(words_per_doc // 8):
            line = " ".join(rng.choice(WORDS) for _ in range(8))
            lines.append(line.capitalize() + rng.choice([".", ",", ";", "!", "?"]))
        docs.append(Document(f"play_{i:02d}.txt", "\n".join(lines) + "\n"))
    return docs


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared data folder (train/val/test bins, meta.json, stats.json) from the tiny corpus."""
    out = tmp_path_factory.mktemp("prepared")
    cfg = REPO_PARAMS.data.with_(source="fixture", sha256=None, val_fraction=0.15, test_fraction=0.15)
    prepare(make_documents(), "fixture-hash", cfg, out)
    return out


TINY_MODEL = dict(n_layer=1, n_head=2, n_embd=16, block_size=16)
TINY_OPTIM = dict(
    batch_size=8, max_steps=12, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=6, eval_batches=2,
    checkpoint_every=4, device="cpu",
)


def tiny_params(**sections):
    """Validated params with tiny sizes; keyword arguments override whole sections' keys."""
    raw = {
        "model": dict(TINY_MODEL),
        "train": dict(TINY_OPTIM, alpha=0.5, alpha_warmup_steps=2),
        "judge": {"model": dict(TINY_MODEL), "train": dict(TINY_OPTIM)},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return params_with(raw)
