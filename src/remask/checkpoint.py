"""Checkpoints that never execute code, and that fail with a message naming file and tensor.

A model directory (``models/<variant>/``) holds:

- ``model.safetensors``: the weights (the tied embedding/``lm_head`` matrix stored once);
- ``config.json``: the model config, the tokenizer and what produced it;
- ``train_state.pt``: everything needed to resume training exactly (weights, optimizer,
  RNG states, step, a fingerprint of the run's settings), loaded with ``weights_only=True``.

Every file is written atomically.
"""

from __future__ import annotations

import json
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save_model as save_safetensors_model

from remask import atomic
from remask.data import CharTokenizer, sha256_of
from remask.errors import CheckpointError
from remask.model import CRITIC_PARAMETERS, DiffusionTransformer, ModelConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAIN_STATE = "train_state.pt"
TIED_PAIR = {"wte.weight", "lm_head.weight"}


def save_model(directory: str | Path, model: DiffusionTransformer, tokenizer: CharTokenizer, info: dict) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(directory / WEIGHTS) as tmp:
        save_safetensors_model(model, str(tmp))  # safetensors' save_model drops the tied duplicate
    atomic.write_json(
        directory / CONFIG, {"model": model.config.to_dict(), "tokenizer": tokenizer.to_dict(), **info}
    )


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: checkpoint folder not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (a checkpoint folder needs {CONFIG} and {WEIGHTS})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from None


def load_model(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[DiffusionTransformer, CharTokenizer, dict]:
    """Build the model from ``config.json`` and load ``model.safetensors`` into it, checked."""
    raw = read_config(directory)
    try:
        cfg = ModelConfig.from_dict(raw["model"])
        tokenizer = CharTokenizer.from_dict(raw["tokenizer"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{Path(directory) / CONFIG}: malformed: {exc}") from None
    model = DiffusionTransformer(cfg)
    load_weights(model, Path(directory) / WEIGHTS)
    return model.to(device).eval(), tokenizer, raw


def load_judge(directory: str | Path, tokenizer: CharTokenizer, scored: str | Path,
               device: str | torch.device = "cpu") -> DiffusionTransformer:
    """The judge in ``directory``, which must read the vocabulary of the model it scores (in
    ``scored``, whose ``tokenizer`` is given): a judge of other characters would score other text."""
    judge, judge_tokenizer, _ = load_model(directory, device)
    if judge_tokenizer.chars != tokenizer.chars:
        raise CheckpointError(f"{directory} and {scored} use different vocabularies")
    return judge


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def load_weights(model: DiffusionTransformer, path: Path) -> None:
    state = read_weights(path)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=False)


def init_from_checkpoint(model: DiffusionTransformer, directory: str | Path) -> list[str]:
    """Copy the weights saved in ``directory`` into ``model``, to continue training from them.

    A critic of another architecture (a ``linear`` vs ``mlp`` head, other ``critic_layers``) keeps
    its fresh initial values; every other tensor must fit. Returns the names of the tensors left fresh.
    """
    path = Path(directory) / WEIGHTS
    state = read_weights(path)
    expected = model.state_dict()
    critic = [k for k in expected if k.startswith(CRITIC_PARAMETERS)]
    saved = [k for k in state if k.startswith(CRITIC_PARAMETERS)]
    fits = set(saved) == set(critic) and all(state[k].shape == expected[k].shape for k in critic)
    fresh = [] if fits else critic
    if fresh:
        state = {k: v for k, v in state.items() if not k.startswith(CRITIC_PARAMETERS)}
        state.update({k: expected[k] for k in fresh})
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=False)
    return fresh


def weights_digest(directory: str | Path) -> str:
    """sha256 of a model directory's weights file: a run started from it resumes only from the same one."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    return sha256_of(path)


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: Path | str) -> None:
    """Raise naming the first tensor that is missing, unexpected or of the wrong shape."""
    expected = model.state_dict()
    tied = TIED_PAIR - set(state) if TIED_PAIR & set(state) else set()  # one copy of a tied matrix suffices
    missing = sorted(set(expected) - set(state) - tied)
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{origin}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
    if unexpected:
        raise CheckpointError(f"{origin}: unexpected tensor {unexpected[0]!r}; the checkpoint is of another model")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{origin}: tensor {name!r} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[name].shape)}"
            )


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Load a resumable state with ``weights_only=True``: a pickle that runs code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: refused, it holds more than tensors and plain data ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupted or truncated ({exc})") from None


def load_resumable(path: str | Path, fingerprint: str, max_steps: int, say: Callable[[str], None]) -> dict[str, Any] | None:
    """The training state saved at ``path`` if it is of the same run (same ``fingerprint``) and
    unfinished, else ``None``, saying why a state that is there is not resumed."""
    path = Path(path)
    if not path.is_file():
        return None
    saved = load_train_state(path)
    if saved.get("fingerprint") != fingerprint:
        say(f"{path} was saved with other settings; starting afresh")
    elif int(saved["step"]) >= max_steps:
        say(f"{path} is a finished run; training afresh")
    else:
        return saved
    return None


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """The optimiser's state onto the parameters' ``device`` (a state is loaded on the CPU); AdamW's
    ``step`` counts stay on the CPU, where it keeps them."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and key != "step":
                state[key] = value.to(device)


@dataclass
class TrainingState:
    """What resuming a run restores exactly, for our training and the public peer's alike: the
    model, the optimiser, the run's own generator (its windows and noise), torch's global random
    streams (CPU, and CUDA where there is one), and Python's where the run draws with it
    (``python_rng``: the peer's ``forward()`` does). ``step`` is the number of steps taken;
    ``resumed_from`` the step a saved state was resumed at (``None``: a fresh run)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    python_rng: bool = False
    step: int = 0
    resumed_from: int | None = None

    def save(self, path: str | Path, fingerprint: str) -> None:
        """``train_state.pt``, atomically; ``fingerprint`` names the run's settings."""
        state = {
            "step": self.step, "fingerprint": fingerprint,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        }
        if self.python_rng:
            version, internal, gauss = random.getstate()
            state["python_rng"] = [version, list(internal), gauss]
        save_train_state(path, state)

    def restore(self, path: str | Path, fingerprint: str, max_steps: int, say: Callable[[str], None]) -> bool:
        """Load the state saved at ``path`` if it is of the same, unfinished run
        (:func:`load_resumable`); ``True`` when it was resumed."""
        saved = load_resumable(path, fingerprint, max_steps, say)
        if saved is None:
            return False
        needed = {"model", "optimizer", "generator", "torch_rng"} | ({"python_rng"} if self.python_rng else set())
        missing = sorted(needed - set(saved))
        if missing:
            say(f"{path} holds no {', '.join(missing)} (saved by an older version); starting afresh")
            return False
        check_state_dict(self.model, saved["model"], Path(path))
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(saved["cuda_rng"])
        if self.python_rng:
            version, internal, gauss = saved["python_rng"]
            random.setstate((version, tuple(internal), gauss))
        self.step = self.resumed_from = int(saved["step"])
        return True

    def to(self, device: torch.device) -> None:
        """The model and the optimiser's state (which follows the parameters) onto ``device``."""
        self.model.to(device)
        move_optimizer_state(self.optimizer, device)
