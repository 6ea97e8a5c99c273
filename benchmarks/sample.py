"""Sampling throughput per policy: at equal steps, at equal NFE, and as the batch grows.

Run: ``python benchmarks/sample.py [--checkpoint models/multitask] [--nfe 32]`` after the
training stage, or ``--synthetic`` for an untrained model of ``params.yaml``'s ``model`` size
(throughput does not depend on the weights). All figures come from one run on one device. The
last line is one JSON object keyed by policy, each with ``steps``, ``nfe`` and ``samples_per_s``
at equal NFE, ``chars_per_s``, and ``equal_steps`` (the same at the steps of ``confidence``);
``confidence`` also holds ``batch_scaling`` (samples/s per batch size).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from remask.checkpoint import load_model
from remask.config import load_params
from remask.model import DiffusionTransformer, ModelConfig
from remask.policies import POLICIES
from remask.runtime import resolve_device, synchronize
from remask.sampling import SamplerOptions, diffusion_generate, nfe_for, steps_for_nfe


def samples_per_s(model: DiffusionTransformer, policy: str, steps: int, num_samples: int, length: int,
                  batch_size: int, repeats: int) -> float:
    """Best of ``repeats`` timed runs (after one warm-up), in samples per second."""
    device = next(model.parameters()).device
    best = float("inf")
    for attempt in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        diffusion_generate(model, num_samples, length, SamplerOptions(steps=steps, policy=policy, batch_size=batch_size),
                           seed=attempt)
        synchronize(device)
        if attempt:  # the first run warms up kernels and caches
            best = min(best, time.perf_counter() - start)
    return num_samples / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checkpoint", default="models/multitask")
    parser.add_argument("--synthetic", action="store_true", help="an untrained model of params.yaml's size")
    parser.add_argument("--vocab", type=int, default=67, help="vocabulary size of the synthetic model")
    parser.add_argument("--nfe", type=int, default=32, help="the NFE budget of the equal-NFE comparison")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default=None, help="default: params.yaml's sample.device")
    args = parser.parse_args()
    params = load_params(args.params)
    device = resolve_device(args.device or params.sample.device)
    if args.synthetic:
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=args.vocab, mask_id=args.vocab - 1, **params.model.model_dump())
        model = DiffusionTransformer(cfg).to(device).eval()
    else:
        model, _, _ = load_model(args.checkpoint, device)
    length = min(params.sample.length, model.config.block_size)
    n, batch = args.num_samples, min(args.num_samples, params.sample.batch_size)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {model.num_parameters():,} parameters, "
          f"{n} samples of {length} characters, batch {batch}")

    equal_nfe, equal_steps = {}, {}
    for policy in POLICIES:
        steps = steps_for_nfe(policy, args.nfe)
        rate = samples_per_s(model, policy, steps, n, length, batch, args.repeats)
        equal_nfe[policy] = {"steps": steps, "nfe": nfe_for(policy, steps, length), "samples_per_s": round(rate, 2),
                             "chars_per_s": round(rate * length, 1)}
        same = steps_for_nfe("confidence", args.nfe)
        rate = rate if steps == same else samples_per_s(model, policy, same, n, length, batch, args.repeats)
        equal_steps[policy] = {"steps": same, "nfe": nfe_for(policy, same, length), "samples_per_s": round(rate, 2),
                               "chars_per_s": round(rate * length, 1)}
    for title, table in (("equal NFE", equal_nfe), ("equal steps", equal_steps)):
        print(f"\n{title}:")
        for policy, row in table.items():
            print(f"  {policy:18s} steps {row['steps']:3d}  NFE {row['nfe']:3d}  "
                  f"{row['samples_per_s']:8.2f} samples/s  {row['chars_per_s']:10.1f} chars/s")

    scaling = {}
    steps = steps_for_nfe("confidence", args.nfe)
    print(f"\nbatch scaling (confidence, {steps} steps):")
    for size in args.batch_sizes:
        count = max(size, min(n, 4 * size))
        scaling[str(size)] = round(samples_per_s(model, "confidence", steps, count, length, size, args.repeats), 2)
        print(f"  batch {size:4d}: {scaling[str(size)]:8.2f} samples/s")
    figures = {policy: {**row, "equal_steps": equal_steps[policy]} for policy, row in equal_nfe.items()}
    figures["confidence"]["batch_scaling"] = scaling
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
