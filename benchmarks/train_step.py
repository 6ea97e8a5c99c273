"""Training-step throughput: generator-only vs multi-task, and achieved GFLOP/s vs a matmul peak.

Run: ``python benchmarks/train_step.py [--params params.yaml] [--steps 20]`` (after ``dvc repro
tokenize``, or with ``--synthetic`` to use random tokens). The FLOPs of one step are counted by
``torch.utils.flop_counter`` (not estimated), the peak by timing large float32 matmuls. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from remask.config import load_params
from remask.model import DiffusionTransformer, ModelConfig
from remask.runtime import autocast, resolve_device, synchronize
from remask.noise import draw_noise
from remask.objectives import DiffusionObjective
from remask.train import make_optimizer


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def bench(params, alpha: float, steps: int, vocab: int, device: torch.device) -> tuple[float, float]:
    """Return (tokens/s, FLOPs per step) for a training step with the given alpha."""
    train_cfg = params.train.model_copy(update={"alpha": alpha, "alpha_warmup_steps": 0})
    torch.manual_seed(0)
    model = DiffusionTransformer(ModelConfig(vocab_size=vocab, mask_id=vocab - 1, **params.model.model_dump())).to(device)
    objective = DiffusionObjective(model, train_cfg, params.critic)
    optimizer = make_optimizer(model, train_cfg)
    gen = torch.Generator().manual_seed(0)
    B, T = train_cfg.batch_size, params.model.block_size

    def step() -> None:
        clean = torch.randint(0, vocab - 1, (B, T), generator=gen).to(device)
        noise = draw_noise(B, T, train_cfg.mask_schedule, train_cfg.mask_eps, gen, params.critic, vocab - 1).to(device)
        norm = {"masked": max(float(noise.mask.sum()), 1.0), "tokens": float(B * T),
                "critic": max(float(noise.critic_scope(params.critic.label_scope).sum()), 1.0)}
        with autocast(device):
            loss = objective(clean, noise, alpha, norm)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return B * T * steps / (time.perf_counter() - start), flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: data/prepared/meta.json)")
    args = parser.parse_args()
    params = load_params(args.params)
    meta = Path("data/prepared/meta.json")
    vocab = args.vocab or (json.loads(meta.read_text())["tokenizer"]["vocab_size"] if meta.is_file() else 83)
    device = resolve_device(params.train.device)
    peak = matmul_peak_gflops(device)
    gen_tps, gen_flops = bench(params, 0.0, args.steps, vocab, device)
    mt_tps, mt_flops = bench(params, params.train.alpha or 0.5, args.steps, vocab, device)
    tokens = params.train.batch_size * params.model.block_size
    achieved = mt_flops / tokens * mt_tps / 1e9
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {params.train.batch_size} x {params.model.block_size}")
    print(f"generator-only step: {gen_tps:,.0f} tokens/s ({gen_flops / 1e9:.2f} GFLOP/step)")
    print(f"multi-task step:     {mt_tps:,.0f} tokens/s ({mt_flops / 1e9:.2f} GFLOP/step)")
    print(f"critic's price: {gen_tps / mt_tps:.2f}x time per token (naive estimate 2.0x)")
    print(f"achieved {achieved:.1f} GFLOP/s in the multi-task step; matmul peak {peak:.1f} GFLOP/s ({achieved / peak:.0%})")
    print(json.dumps({
        "gen_only_tokens_per_s": round(gen_tps, 1),
        "multitask_tokens_per_s": round(mt_tps, 1),
        "ratio": round(gen_tps / mt_tps, 3),
        "achieved_gflops": round(achieved, 2),
        "matmul_peak_gflops": round(peak, 2),
    }))


if __name__ == "__main__":
    main()
