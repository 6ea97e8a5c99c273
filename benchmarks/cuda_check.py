"""The CUDA path end to end, with figures: bf16 training, compile, sampling, checkpoints.

Run on a machine with a GPU: ``python benchmarks/cuda_check.py [--steps 300]``. It makes a small
synthetic corpus (no download), trains the multitask model of ``params.yaml``'s ``model`` size
through :func:`remask.train.train` on ``cuda`` (bf16 autocast), reloads the checkpoint on the CPU
and checks that both devices agree, samples with every policy on the GPU (exact NFE, no mask left,
same seed gives the same text), and repeats a short run with ``torch.compile``. The last line is
one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from remask.checkpoint import load_model
from remask.config import DataSection, load_params
from remask.data import Document, load_meta, prepare
from remask.model import ModelConfig
from remask.policies import POLICIES
from remask.runtime import synchronize
from remask.sampling import diffusion_generate, nfe_for, steps_for_nfe
from remask.train import RunSpec, train

WORDS = ("the king is dead long live the king to be or not to be that is the question what light "
         "through yonder window breaks it is the east and juliet is the sun").split()


def synthetic_corpus(out: Path, documents: int = 12, words: int = 6000) -> dict:
    """A prepared data folder of random words; returns its meta.json."""
    rng = random.Random(0)
    docs = [Document(f"doc_{i:02d}.txt", " ".join(rng.choice(WORDS) for _ in range(words)) + "\n")
            for i in range(documents)]
    prepare(docs, "synthetic", DataSection(source="synthetic", sha256=None), out)
    return load_meta(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only to try the script itself")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("cuda_check: no CUDA device; run it on a machine with a GPU")
    device = torch.device(args.device)
    params = load_params(args.params)
    figures: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        meta = synthetic_corpus(root / "data")
        vocab = meta["tokenizer"]["vocab_size"]
        model_cfg = ModelConfig(vocab_size=vocab, mask_id=vocab - 1, **params.model.model_dump())
        results = {}
        for compiled in (False, True):
            run = params.train.model_copy(update={
                "device": device.type, "compile": compiled, "max_steps": args.steps if not compiled else args.steps // 3,
                "eval_every": args.steps, "checkpoint_every": args.steps, "warmup_steps": 20, "alpha_warmup_steps": 20,
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

        sampling = {}
        for policy in POLICIES:
            steps = steps_for_nfe(policy, 32)
            synchronize(device)
            started = time.perf_counter()
            first = diffusion_generate(gpu_model, 64, params.sample.length, steps, policy=policy, seed=0)
            synchronize(device)
            seconds = time.perf_counter() - started
            again = diffusion_generate(gpu_model, 64, params.sample.length, steps, policy=policy, seed=0)
            assert first.nfe == nfe_for(policy, steps) and not (first.tokens == gpu_model.config.mask_id).any()
            assert torch.equal(first.tokens, again.tokens), f"{policy}: the same seed gave different samples"
            sampling[policy] = {"steps": steps, "nfe": first.nfe, "samples_per_s": round(64 / seconds, 1)}
            print(f"[sample] {policy:18s} {steps:3d} steps, NFE {first.nfe:3d}: {64 / seconds:8.1f} samples/s; "
                  f"{tok.decode(first.tokens[0, :60].tolist())!r}")
        figures["sample"] = sampling
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
