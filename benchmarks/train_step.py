"""Training-step throughput: generator-only vs multi-task, achieved GFLOP/s vs a matmul peak, and
where a multi-task step's time goes.

Run: ``python benchmarks/train_step.py [--params params.yaml] [--rounds 5] [--steps 10]``. Both steps
are timed in alternating rounds (so a busy moment of a shared machine hits both alike) and the
median round is reported. FLOPs are counted by ``torch.utils.flop_counter`` (not estimated); the
peak is the best of several timings of large float32 matmuls. ``--profile`` adds a
``torch.profiler`` breakdown of one multi-task step by kind of work. Goals (issue 14): multi-task
step at most 1.9x a generator-only step, at least 45% of the matmul peak. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from remask.config import load_params
from remask.model import DiffusionTransformer, ModelConfig
from remask.noise import draw_noise
from remask.objectives import DiffusionObjective
from remask.runtime import autocast, resolve_device, synchronize
from remask.train import make_optimizer

GOAL_RATIO, GOAL_PEAK_SHARE = 1.9, 0.45
# torch.profiler op names -> the kind of work they are, for the breakdown
KINDS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"),
    "attention": ("scaled_dot_product", "flash_attention"),
    "GELU": ("aten::gelu",),
    "layer norm": ("layer_norm",),
    "rotary (complex multiply)": ("view_as_complex", "view_as_real", "aten::polar"),
    "softmax / cross-entropy": ("log_softmax", "nll_loss", "aten::_softmax", "cross_entropy"),
    "critic input sampling (float64)": ("aten::cumsum", "aten::lt", "aten::masked_scatter"),
    "optimizer (AdamW)": ("_fused_adamw", "aten::_foreach", "aten::lerp", "Optimizer.step"),
}


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 10, tries: int = 3) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(tries):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


class StepBench:
    """One training step (forward, backward, AdamW) of the default model at a given ``alpha``."""

    def __init__(self, params, alpha: float, vocab: int, device: torch.device):
        self.cfg = params.train.model_copy(update={"alpha": alpha, "alpha_warmup_steps": 0})
        self.critic, self.device, self.vocab = params.critic, device, vocab
        torch.manual_seed(0)
        model_cfg = ModelConfig(vocab_size=vocab, mask_id=vocab - 1, **params.model.model_dump())
        self.model = DiffusionTransformer(model_cfg).to(device)
        self.objective = DiffusionObjective(self.model, self.cfg, self.critic)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.generator = torch.Generator().manual_seed(0)
        self.alpha = torch.tensor(alpha, device=device)
        self.shape = (self.cfg.batch_size, params.model.block_size)

    def step(self) -> None:
        B, T = self.shape
        clean = torch.randint(0, self.vocab - 1, (B, T), generator=self.generator).to(self.device)
        noise = draw_noise(B, T, self.cfg.mask_schedule, self.cfg.mask_eps, self.generator, self.critic, self.vocab - 1)
        noise = noise.to(self.device)
        counts = {"masked": noise.mask.sum(), "tokens": noise.mask.numel(), "critic": noise.critic_view().critic_scope(self.critic.label_scope).sum()}
        norm = {k: torch.tensor(max(float(v), 1.0), device=self.device) for k, v in counts.items()}
        with autocast(self.device):
            loss = self.objective(clean, noise, self.alpha, norm)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def flops(self) -> int:
        with FlopCounterMode(display=False) as counter:
            self.step()
        return counter.get_total_flops()

    def seconds(self, steps: int) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        synchronize(self.device)
        return (time.perf_counter() - start) / steps


def breakdown(bench: StepBench, steps: int = 5) -> dict[str, float]:
    """Share of a multi-task step's self time per kind of work (torch.profiler, CPU ops).

    The rotary embedding's complex multiply is an ``aten::mul`` like any other; it is told apart by
    its operand, the rotation table of shape ``(T, 1, head_dim / 2)``, in the forward and backward.
    """
    head_dim = bench.model.config.n_embd // bench.model.config.n_head
    rotation_shape = [bench.shape[1], 1, head_dim // 2]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            bench.step()
    shares: dict[str, float] = defaultdict(float)
    total = 0.0
    for event in prof.key_averages(group_by_input_shape=True):
        total += event.self_cpu_time_total
        if event.key == "aten::mul" and rotation_shape in event.input_shapes:
            kind = "rotary (complex multiply)"
        else:
            kind = next((k for k, names in KINDS.items() if any(n in event.key for n in names)), "other elementwise and copies")
        shares[kind] += event.self_cpu_time_total
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (the median is reported)")
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: data/prepared/meta.json)")
    parser.add_argument("--profile", action="store_true", help="also print where a multi-task step's time goes")
    args = parser.parse_args()
    params = load_params(args.params)
    meta = Path("data/prepared/meta.json")
    vocab = args.vocab or (json.loads(meta.read_text())["tokenizer"]["vocab_size"] if meta.is_file() else 84)
    device = resolve_device(params.train.device)
    benches = {"generator_only": StepBench(params, 0.0, vocab, device),
               "multitask": StepBench(params, params.train.alpha or 0.5, vocab, device)}
    flops = {}
    for name, bench in benches.items():
        for _ in range(3):
            bench.step()
        flops[name] = bench.flops()
    times: dict[str, list[float]] = {name: [] for name in benches}
    for _ in range(args.rounds):
        for name, bench in benches.items():
            times[name].append(bench.seconds(args.steps))
    peak = matmul_peak_gflops(device)
    seconds = {name: statistics.median(t) for name, t in times.items()}
    tokens = params.train.batch_size * params.model.block_size
    ratio = seconds["multitask"] / seconds["generator_only"]
    achieved = {name: flops[name] / seconds[name] / 1e9 for name in benches}
    share = achieved["multitask"] / peak
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {params.train.batch_size} x "
          f"{params.model.block_size}, median of {args.rounds} alternating rounds of {args.steps} steps")
    for name in benches:
        spread = f"{min(times[name]) * 1e3:.0f}-{max(times[name]) * 1e3:.0f}"
        print(f"{name:>15} step: {seconds[name] * 1e3:6.1f} ms (rounds {spread} ms), {tokens / seconds[name]:,.0f} tokens/s, "
              f"{flops[name] / 1e9:.2f} GFLOP/step, {achieved[name]:.1f} GFLOP/s")
    print(f"critic's price: {ratio:.2f}x time per token (goal <= {GOAL_RATIO}x; two passes would be 2.0x): "
          f"{'met' if ratio <= GOAL_RATIO else 'NOT met'}")
    print(f"multi-task step at {share:.0%} of the matmul peak {peak:.1f} GFLOP/s (goal >= {GOAL_PEAK_SHARE:.0%}): "
          f"{'met' if share >= GOAL_PEAK_SHARE else 'NOT met'}")
    result = {
        "gen_only_tokens_per_s": round(tokens / seconds["generator_only"], 1),
        "multitask_tokens_per_s": round(tokens / seconds["multitask"], 1),
        "ratio": round(ratio, 3),
        "achieved_gflops": round(achieved["multitask"], 2),
        "matmul_peak_gflops": round(peak, 2),
        "peak_share": round(share, 3),
    }
    if args.profile:
        shares = breakdown(benches["multitask"])
        print("where a multi-task step's time goes (torch.profiler, self CPU time):")
        for kind, value in shares.items():
            print(f"  {kind:<34} {value:6.1%}")
        result["breakdown"] = {k: round(v, 4) for k, v in shares.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
