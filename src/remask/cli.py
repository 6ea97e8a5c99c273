"""``remask`` command line: ``sample`` text with a re-masking policy, ``score`` text with the critic.

Bad input (an unknown policy, steps < 1, a prompt longer than ``--length``, characters outside
the vocabulary, a missing checkpoint) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from remask.checkpoint import CheckpointError, load_model
from remask.data import DataError
from remask.policies import POLICIES, untrained_inputs
from remask.runtime import autocast, resolve_device
from remask.sampling import SELECTIONS, SamplerOptions, diffusion_generate, prefix_prompt
from remask.schedules import SCHEDULES

SUSPECT = 0.5  # error probability above which `score` highlights a character


class UsageError(ValueError):
    """Input the command cannot use; reported in one line with exit code 2."""


def _load_diffusion_model(path: str, device: str, policy: str | None, temperature: float = 1.0):
    """The checkpoint at ``path``, refused where ``policy`` would read inputs it was not trained on."""
    model, tok, info = load_model(path, resolve_device(device))
    if model.config.causal:
        raise UsageError(f"{path} is a causal (judge) model; use a diffusion checkpoint such as models/multitask")
    missing = untrained_inputs(policy, info, (temperature, temperature)) if policy else []
    if missing:
        raise UsageError(f"policy {policy!r} needs {'; '.join(missing)}, which {path} was not trained on; "
                         "choose a policy and temperature the checkpoint was trained for")
    return model, tok, info


def _positive(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {value}")
        return value

    return parse


def cmd_sample(args: argparse.Namespace) -> None:
    if args.policy not in POLICIES:
        raise UsageError(f"unknown policy {args.policy!r}; valid policies: {', '.join(POLICIES)}")
    model, tok, _ = _load_diffusion_model(args.checkpoint, args.device, args.policy, args.temperature)
    args.length = args.length or model.config.block_size
    if args.length > model.config.block_size:
        raise UsageError(f"--length {args.length} exceeds the model's block_size {model.config.block_size}")
    if len(args.prompt) > args.length:
        raise UsageError(f"the prompt has {len(args.prompt)} characters, longer than --length {args.length}")
    try:
        prompt_ids = tok.encode(args.prompt)
    except DataError as exc:
        raise UsageError(f"the prompt has {exc}") from None
    options = SamplerOptions(
        steps=args.steps, policy=args.policy, schedule=args.schedule, temperature=args.temperature, top_p=args.top_p,
        randomness_strength=args.randomness, selection=args.selection, selection_temperature=args.selection_temperature,
        committed_budget=args.committed_budget, batch_size=args.batch_size)
    known = prefix_prompt(prompt_ids, args.num_samples, args.length, tok.mask_id)
    result = diffusion_generate(model, args.num_samples, args.length, options, seed=args.seed, known=known,
                                progress=True)
    lines = [
        json.dumps({
            "text": tok.decode(row.tolist()), "policy": args.policy, "steps": args.steps, "nfe": result.nfe,
            "seed": args.seed, "index": i, "length": args.length, "schedule": args.schedule,
            "temperature": args.temperature, "selection": args.selection,
            "selection_temperature": args.selection_temperature, "randomness": args.randomness,
            "committed_budget": args.committed_budget, "prompt": args.prompt,
        })
        for i, row in enumerate(result.tokens)
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        from remask.atomic import write_text

        write_text(args.out, text)
    else:
        sys.stdout.write(text)


@torch.no_grad()
def critic_error_probs(model, ids: list[int]) -> list[float]:
    """The critic's error probability per token, in windows of the model's block size."""
    device = next(model.parameters()).device
    probs: list[float] = []
    block = model.config.block_size
    for start in range(0, len(ids), block):
        window = torch.tensor([ids[start : start + block]], device=device)
        with autocast(device):
            logits = model(window, head="critic").float()
        probs.extend(torch.sigmoid(logits)[0].tolist())
    return probs


def cmd_score(args: argparse.Namespace) -> None:
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}: not valid UTF-8 at byte offset {exc.start}") from None
    else:
        text = args.text
    if not text:
        raise UsageError("the text to score is empty")
    model, tok, info = _load_diffusion_model(args.checkpoint, args.device, policy=None)
    if not info.get("alpha", 0) > 0:
        raise UsageError(f"{args.checkpoint} was trained with alpha = 0, so its critic head is untrained; "
                         "use models/multitask")
    try:
        ids = tok.encode(text)
    except DataError as exc:
        raise UsageError(f"the text has {exc}") from None
    probs = critic_error_probs(model, ids)
    if args.json:
        print(json.dumps({"text": text, "error_prob": [round(p, 6) for p in probs],
                          "suspects": [i for i, p in enumerate(probs) if p > args.threshold]}))
    elif sys.stdout.isatty():
        print("".join(_highlight(c, p, args.threshold) for c, p in zip(text, probs)))
    else:
        print(text)
        for i, (c, p) in enumerate(zip(text, probs)):
            if p > args.threshold:
                print(f"{i}\t{c!r}\t{p:.3f}")


def _highlight(char: str, prob: float, threshold: float) -> str:
    if prob <= threshold or char == "\n":
        return char
    return f"\x1b[1;37;41m{char}\x1b[0m"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sample = sub.add_parser("sample", help="generate text by masked diffusion with a re-masking policy")
    sample.add_argument("--checkpoint", default="models/multitask", help="model folder (default: models/multitask)")
    sample.add_argument("--policy", default="confidence", help=f"one of: {', '.join(POLICIES)}")
    sample.add_argument("--steps", type=_positive("--steps"), default=32)
    sample.add_argument("--num-samples", type=_positive("--num-samples"), default=4)
    sample.add_argument("--length", type=_positive("--length"), default=None,
                        help="characters per sample (default: the model's block_size)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--prompt", default="", help="text fixed at the start of every sample")
    sample.add_argument("--schedule", choices=SCHEDULES, default="linear")
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--top-p", type=float, default=1.0)
    sample.add_argument("--randomness", type=float, default=0.0, help="noise blended into policy scores, 0..1")
    sample.add_argument("--selection", choices=SELECTIONS, default="gumbel",
                        help="how the tokens to re-mask are chosen from the scores (default: gumbel, as params.yaml)")
    sample.add_argument("--selection-temperature", type=float, default=1.0,
                        help="Gumbel noise scale at the first step, annealed to 0 (default: 1.0)")
    sample.add_argument("--committed-budget", type=float, default=None,
                        help="for a policy that may re-mask committed tokens: keep the choice among the tokens just "
                             "filled and re-mask this share of the committed ones besides (0..1; default: the "
                             "policy's own pool)")
    sample.add_argument("--batch-size", type=_positive("--batch-size"), default=64)
    sample.add_argument("--device", default="auto")
    sample.add_argument("--out", help="write JSON lines here (default: stdout)")
    sample.set_defaults(func=cmd_sample)

    score = sub.add_parser("score", help="the critic's error probability for every character of a text")
    score.add_argument("--checkpoint", default="models/multitask")
    source = score.add_mutually_exclusive_group(required=True)
    source.add_argument("--text")
    source.add_argument("--file")
    score.add_argument("--json", action="store_true", help="print the numbers as JSON")
    score.add_argument("--threshold", type=float, default=SUSPECT, help="highlight above this probability")
    score.add_argument("--device", default="auto")
    score.set_defaults(func=cmd_score)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UsageError, CheckpointError, DataError, ValueError) as exc:
        print(f"remask: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
