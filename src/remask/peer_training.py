"""Training the public peer (:mod:`remask.peer`) with its own loss, inside our run's settings.

The loop around its ``forward()`` is ours, so that nothing but the recipe differs from
``models/multitask``: the same train windows in the same order (a generator seeded with
``train.seed``), batch, steps, AdamW and learning-rate schedule, gradient clipping, bf16 autocast on
CUDA. A run resumes exactly from ``train_state.pt`` (loaded with ``weights_only=True``): its
forward draws with torch's global generator and with Python's ``random``, and both are saved. At
the end our :func:`remask.validation.evaluate_diffusion` scores it on the validation windows and
masks every model of ours sees.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from remask import checkpoint
from remask.config import CriticSection, ModelSection, PeerSection, TrainSection
from remask.data import CharTokenizer, fixed_windows, load_meta, load_split, sample_windows
from remask.peer import (PACKAGE, VERSION, PeerConfig, PeerModel, build_peer, ours_parameter_count, parameter_count,
                         save_peer)
from remask.runtime import autocast, resolve_device
from remask.train import EVAL_SEED_OFFSET, TrainingError, make_optimizer, optimizer_step
from remask.validation import evaluate_diffusion

LOG_EVERY = 50  # steps between the progress bar's running losses (one host sync each)


def _fingerprint(cfg: PeerConfig, train: TrainSection, meta: dict) -> str:
    settings = {"peer": asdict(cfg), "version": VERSION, "data": meta["bin_sha256"],
                "train": train.model_dump(exclude={"resume", "device", "compile", "eval_every", "checkpoint_every"})}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _save(out_dir: Path, state: checkpoint.TrainingState, fingerprint: str, info: dict) -> None:
    state.save(out_dir / checkpoint.TRAIN_STATE, fingerprint)
    save_peer(out_dir, state.model, {**info, "step": state.step, "fingerprint": fingerprint})


def train_peer(model: ModelSection, peer: PeerSection, train: TrainSection, critic: CriticSection,
               data_dir: str | Path, out_dir: str | Path, progress: bool = True,
               stop_after: int | None = None) -> dict:
    """Train the peer with its own loss for ``train.max_steps`` steps of ``train.batch_size`` windows
    (the windows ``models/multitask`` sees, in the same order), our AdamW and learning-rate schedule;
    ``stop_after`` ends early with a checkpoint, as an interruption would. Returns its metrics:
    the last running losses and our validation of it (``val``: the generator's loss on the same
    windows and masks as ours; the critic against the seed's label, our yardstick)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    meta = load_meta(data_dir)
    tokenizer = CharTokenizer.from_dict(meta["tokenizer"])
    cfg = PeerConfig.of(model, peer, tokenizer)
    device = resolve_device(train.device)
    torch.manual_seed(train.seed)
    random.seed(train.seed)  # its forward() flips coins with Python's random (BERT replacement, sample temperature)
    wrapper = build_peer(cfg)
    # the run's own generator draws the windows; its forward() also draws with Python's random
    state = checkpoint.TrainingState(wrapper, make_optimizer(wrapper, train), torch.Generator().manual_seed(train.seed),
                                     python_rng=True)
    fingerprint = _fingerprint(cfg, train, meta)
    info = {"peer": asdict(cfg), "tokenizer": tokenizer.to_dict(), "package": f"{PACKAGE}=={VERSION}",
            "wrapper": {"self_token_critic": True, "schedule": "linear", "can_mask_prev_unmasked": False,
                        "use_simple_mdlm_loss_weight": False},
            "parameters": parameter_count(wrapper), "parameters_ours": ours_parameter_count(model, tokenizer),
            "train": train.model_dump(exclude={"resume", "device", "compile"})}
    path = out_dir / checkpoint.TRAIN_STATE
    if train.resume and state.restore(path, fingerprint, train.max_steps, lambda why: print(f"[peer] {why}")):
        print(f"[peer] resuming from {path} at step {state.step}")
    start = state.step
    state.to(device)
    wrapper.train()
    data = load_split(data_dir, "train", meta)
    end = train.max_steps if stop_after is None else min(train.max_steps, start + stop_after)
    running: list[torch.Tensor] = []
    last = {}
    bar = tqdm(range(start, end), desc="train peer", unit="step", initial=start, total=train.max_steps,
               disable=not progress)
    for step in bar:
        batch = sample_windows(data, train.batch_size, cfg.block_size, state.generator).to(device)
        with autocast(device):
            losses = wrapper(batch)
        optimizer_step(wrapper, state.optimizer, losses.loss, step, train)
        running.append(torch.stack([losses.loss, losses.generator_loss, losses.critic_loss]).detach().float())
        if len(running) == LOG_EVERY or step + 1 == end:
            mean = torch.stack(running).mean(0).tolist()
            running.clear()
            if not all(map(math.isfinite, mean)):
                raise TrainingError(f"the peer's loss is not finite at step {step + 1}: {mean}")
            last = dict(zip(("loss", "generator_loss", "critic_loss"), mean))
            bar.set_postfix(gen=f"{mean[1]:.3f}", critic=f"{mean[2]:.3f}")
        state.step = step + 1
        if state.step % train.checkpoint_every == 0 or state.step == end:
            _save(out_dir, state, fingerprint, info)
    bar.close()
    val_windows = fixed_windows(load_split(data_dir, "val", meta), train.eval_batches * train.batch_size, cfg.block_size)
    val = evaluate_diffusion(PeerModel(wrapper, cfg), val_windows, train, critic, train.seed + EVAL_SEED_OFFSET,
                             train.batch_size)
    return {"step": end, "train": last, "val": val, "parameters": info["parameters"],
            "parameters_ours": info["parameters_ours"]}
