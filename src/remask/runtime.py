"""Devices, precision and the one branch that makes a run distributed (torchrun + DDP)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


DEVICES = ("auto", "cpu", "cuda", "mps")  # what a device setting may name (cuda also as cuda:<index>)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an explicit name must be available."""
    if name.split(":")[0] not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICES)} (or cuda:<index>)")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device")
    if name.startswith("mps") and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but torch sees no MPS device")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock timings mean something (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (where it is fast and safe); full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def process_device(world: World, device_name: str) -> torch.device:
    """This process's device: ``device_name`` resolved, and on CUDA in a distributed world the GPU of
    its local rank."""
    device = resolve_device(device_name)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    return device


def init_world(device_name: str) -> tuple[World, torch.device]:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1), else run alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), resolve_device(device_name)
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    device = process_device(world, device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world, device


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
