"""The CUDA path end to end, with figures: bf16 training, compile, sampling, checkpoints.

Run on a machine with a GPU: ``python benchmarks/cuda_check.py [--steps 300] [--parts ...]``. It
makes a small synthetic corpus (no download) and, part by part:

- ``base``: trains the multitask model of ``params.yaml``'s ``model`` size through
  :func:`remask.train.train` on ``cuda`` (bf16 autocast), reloads the checkpoint on the CPU and
  checks that both devices agree, samples with every policy on the GPU (exact NFE, no mask left,
  same seed gives the same text), and repeats a short run with ``torch.compile``;
- ``variants``: every study variant (critic targets, the self-correcting generator) trained eager
  and compiled, each sampled with its rows (committed budgets included), exact NFE, deterministic;
- ``peer``: the public peer (x-transformers, if installed) trained on the GPU with bf16, reloaded
  on the CPU (logits must agree), sampled with its own ``generate()`` with its passes counted.

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import torch

from remask.checkpoint import load_model
from remask.config import DataSection, Params, load_params
from remask.data import Document, load_meta, prepare
from remask.model import ModelConfig
from remask.policies import POLICIES, require_trained
from remask.runtime import synchronize
from remask.sampling import SamplerOptions, diffusion_generate, nfe_for, steps_for_nfe
from remask.train import RunSpec, train

WORDS = ("the king is dead long live the king to be or not to be that is the question what light "
         "through yonder window breaks it is the east and juliet is the sun").split()


def synthetic_corpus(out: Path, data: DataSection, documents: int = 12, words: int = 6000) -> dict:
    """A prepared data folder of random words, split as ``data`` says; returns its meta.json."""
    rng = random.Random(0)
    docs = [Document(f"doc_{i:02d}.txt", " ".join(rng.choice(WORDS) for _ in range(words)) + "\n")
            for i in range(documents)]
    prepare(docs, "synthetic", data.with_(source="synthetic", sha256=None), out)
    return load_meta(out)


def check_base(params: Params, root: Path, device: torch.device, vocab: int, steps: int) -> dict:
    figures = {}
    model_cfg = ModelConfig(vocab_size=vocab, mask_id=vocab - 1, **params.model.model_dump())
    results = {}
    for compiled in (False, True):
        run = params.train.model_copy(update={
            "device": device.type, "compile": compiled, "max_steps": steps if not compiled else steps // 3,
            "eval_every": steps, "checkpoint_every": steps, "warmup_steps": 20, "alpha_warmup_steps": 20,
        })
        name = "compiled" if compiled else "eager"
        spec = RunSpec(variant=f"cuda_{name}", objective="diffusion", model=model_cfg, optim=run, diffusion=run,
                       critic=params.critic, out_dir=root / name, live_dir=root / f"live_{name}")
        started = time.perf_counter()
        result = train(spec, root / "data", progress=False)
        seconds = time.perf_counter() - started
        tokens = run.max_steps * run.batch_size * params.model.block_size
        results[name] = {"steps": run.max_steps, "seconds": round(seconds, 2),
                         "tokens_per_s": round(tokens / seconds, 1), **{k: round(v, 4) for k, v in result.metrics.items()}}
        print(f"[{name}] {run.max_steps} steps in {seconds:.1f} s ({tokens / seconds:,.0f} tokens/s), "
              f"val gen loss {result.metrics['gen_loss']:.4f}, critic AUROC {result.metrics['critic_auroc']:.3f}")
    figures["train"] = results

    gpu_model, tok, _ = load_model(root / "eager", device)
    cpu_model, _, _ = load_model(root / "eager", "cpu")
    idx = torch.randint(0, vocab - 1, (4, params.model.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = (gpu_model(idx.to(device), head="lm").float().cpu() - cpu_model(idx, head="lm")).abs().max().item()
    assert gap < 1e-3, f"GPU and CPU logits differ by {gap}"
    figures["cpu_gpu_max_logit_gap"] = gap
    figures["sample"] = {policy: sample_check(gpu_model, tok, params, device, policy) for policy in POLICIES
                         if policy != "self_planning"}  # self_planning needs a self-correcting generator: variants
    return figures


def sample_check(model, tok, params: Params, device: torch.device, policy: str, committed_budget: float | None = None,
                 label: str | None = None) -> dict:
    """64 samples at NFE 32 on the GPU: exact NFE, no mask left, the same seed gives the same text."""
    steps = steps_for_nfe(policy, 32)
    synchronize(device)
    started = time.perf_counter()
    first = diffusion_generate(model, 64, params.sample.length,
                               SamplerOptions(steps=steps, policy=policy, committed_budget=committed_budget),
                               seed=0)
    synchronize(device)
    seconds = time.perf_counter() - started
    again = diffusion_generate(model, 64, params.sample.length,
                               SamplerOptions(steps=steps, policy=policy, committed_budget=committed_budget),
                               seed=0)
    assert first.nfe == nfe_for(policy, steps, params.sample.length) and not (first.tokens == model.config.mask_id).any()
    assert torch.equal(first.tokens, again.tokens), f"{policy}: the same seed gave different samples"
    print(f"[sample] {label or policy:28s} {steps:3d} steps, NFE {first.nfe:3d}: {64 / seconds:8.1f} samples/s; "
          f"{tok.decode(first.tokens[0, :60].tolist())!r}")
    return {"steps": steps, "nfe": first.nfe, "samples_per_s": round(64 / seconds, 1)}


def check_variants(params: Params, root: Path, device: torch.device, vocab: int, steps: int) -> dict:
    """Each study variant's objective on the GPU, eager and compiled, and its rows sampled there."""
    figures = {}
    for name, variant in params.study.variants.items():
        own = params.for_variant(name)
        model_cfg = ModelConfig(vocab_size=vocab, mask_id=vocab - 1, **own.model.model_dump())
        for compiled in (False, True):
            run = own.train.model_copy(update={
                "device": device.type, "compile": compiled, "max_steps": steps // 3, "eval_every": steps,
                "checkpoint_every": steps, "warmup_steps": 20, "alpha_warmup_steps": 20})
            tag = f"{name}_{'compiled' if compiled else 'eager'}"
            spec = RunSpec(variant=f"cuda_{tag}", objective="diffusion", model=model_cfg, optim=run, diffusion=run,
                           critic=own.critic, out_dir=root / tag, live_dir=root / f"live_{tag}")
            started = time.perf_counter()
            result = train(spec, root / "data", progress=False)
            seconds = time.perf_counter() - started
            assert math.isfinite(result.metrics["gen_loss"]), f"{tag}: the validation loss is not finite"
            figures[tag] = {"steps": run.max_steps, "seconds": round(seconds, 2),
                            "gen_loss": round(result.metrics["gen_loss"], 4)}
            print(f"[{tag}] {run.max_steps} steps in {seconds:.1f} s, val gen loss {result.metrics['gen_loss']:.4f}")
        model, tok, training = load_model(root / f"{name}_eager", device)
        for row, spec_row in variant.policies.items():
            require_trained(spec_row.runs(row), training, tuple(params.sample.tuning.temperature_range), name)
            figures[f"{row}@{name}"] = sample_check(model, tok, params, device, spec_row.runs(row),
                                                    spec_row.committed_budget, f"{row}@{name}")
    return figures


def check_peer(params: Params, root: Path, device: torch.device, steps: int) -> dict:
    """The public peer trained on the GPU (bf16), reloaded on the CPU, sampled with its passes counted."""
    from remask.peer import PeerModel, load_peer, peer_generate, peer_nfe
    from remask.peer_training import train_peer

    run = params.train.model_copy(update={"device": device.type, "max_steps": steps, "warmup_steps": 20,
                                          "checkpoint_every": steps})
    started = time.perf_counter()
    metrics = train_peer(params.model, params.study.peer, run, params.critic, root / "data", root / "peer",
                         progress=False)
    seconds = time.perf_counter() - started
    print(f"[peer] {steps} steps in {seconds:.1f} s, val gen loss {metrics['val']['gen_loss']:.4f}, "
          f"{metrics['parameters']:,} parameters (ours {metrics['parameters_ours']:,})")
    gpu, tok, raw = load_peer(root / "peer", device)
    cpu, _, _ = load_peer(root / "peer", "cpu")
    idx = torch.randint(0, tok.vocab_size - 1, (4, params.model.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = (PeerModel(gpu, None)(idx.to(device)).float().cpu() - PeerModel(cpu, None)(idx)).abs().max().item()
    assert gap < 1e-3, f"the peer's GPU and CPU logits differ by {gap}"
    synchronize(device)
    started = time.perf_counter()
    tokens, nfe = peer_generate(gpu, 64, 16, 1.0, 1.0, params.study.peer.filter_thres, 0, 64)
    synchronize(device)
    sample_seconds = time.perf_counter() - started
    again, _ = peer_generate(gpu, 64, 16, 1.0, 1.0, params.study.peer.filter_thres, 0, 64)
    assert nfe == peer_nfe(16) == 32 and torch.equal(tokens, again), "the peer's NFE or its seed does not hold"
    print(f"[peer] sample 16 steps, NFE {nfe}: {64 / sample_seconds:.1f} samples/s; "
          f"{tok.decode(tokens[0, :60].tolist(), mask='_')!r}")
    return {"steps": steps, "seconds": round(seconds, 2), "gen_loss": round(metrics["val"]["gen_loss"], 4),
            "cpu_gpu_max_logit_gap": gap, "nfe": nfe, "samples_per_s": round(64 / sample_seconds, 1)}


CHECKS = {"peer": lambda params, root, device, vocab, steps: check_peer(params, root, device, steps),
          "variants": check_variants, "base": check_base}
PARTS = tuple(CHECKS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only to try the script itself")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if set(parts) - set(PARTS):
        raise SystemExit(f"cuda_check: --parts takes {', '.join(PARTS)}, got {args.parts}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("cuda_check: no CUDA device; run it on a machine with a GPU")
    device = torch.device(args.device)
    params = load_params(args.params)
    figures: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vocab = synthetic_corpus(root / "data", params.data)["tokenizer"]["vocab_size"]
        for part in PARTS:  # each prints its figures as it goes; the last line holds them all
            if part in parts:
                figures[part] = CHECKS[part](params, root, device, vocab, args.steps)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
