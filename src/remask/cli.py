"""``remask`` command line: ``sample`` text with a re-masking policy, ``score`` how suspect each
character of a text is.

Bad input (an unknown policy or device, a temperature out of range, steps < 1, a prompt longer than
``--length``, characters outside the vocabulary, a missing checkpoint or tuning log) ends with one
line on stderr, naming the flag or file, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from remask.checkpoint import CONFIG, CheckpointError, load_model
from remask.data import DataError
from remask.policies import POLICIES, untrained_inputs
from remask.runtime import resolve_device
from remask.sampling import SELECTIONS, SamplerOptions, diffusion_generate, prefix_prompt, steps_for_nfe
from remask.schedules import SCHEDULES
from remask.tempering import ANNEALING, temperature_span
from remask.scoring import COST, MEASURED_AS, best_score, error_scores, map_unknown, measured_aurocs, top_spans

TOP_SUSPECTS = 5  # characters `score` names by default, the most suspect first
# the stage that builds each quick-tier checkpoint, named when one is missing
BUILT_BY = {"multitask": "train_multitask", "generator_only": "train_generator_only", "judge": "train_judge"}


class UsageError(ValueError):
    """Input the command cannot use; reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with the command's contract: a bad flag is one line on stderr and exit code 2
    (argparse prints the usage first; ``--help`` still shows it)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None


def _load(path: str, device: str):
    """The checkpoint at ``path``; a missing one names the command that builds it."""
    if not (Path(path) / CONFIG).is_file():
        stage = BUILT_BY.get(Path(path).name)
        build = f"`dvc repro {stage}` (or `make repro`)" if stage else "`make repro` (models/multitask)"
        raise UsageError(f"--checkpoint {path}: no trained model there; {build} builds one")
    return load_model(path, _device(device))


def _load_diffusion_model(path: str, device: str, policy: str | None,
                          temperatures: tuple[float, float] = (1.0, 1.0)):
    """The checkpoint at ``path``, refused where ``policy`` would read inputs it was not trained on
    (at sampling temperatures from ``temperatures[0]`` to ``[1]``)."""
    model, tok, info = _load(path, device)
    if model.config.causal:
        raise UsageError(f"{path} is a causal (judge) model; use a diffusion checkpoint such as models/multitask")
    missing = untrained_inputs(policy, info, temperatures) if policy else []
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


def _number(name: str, low: float, high: float | None = None, low_open: bool = False):
    """An argparse type for a number in ``[low, high]`` (``(low, ...`` with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if value < low or (low_open and value == low) or (high is not None and value > high):
            bound = f"{'>' if low_open else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")
            raise argparse.ArgumentTypeError(f"{name} must be {bound}, got {value:g}")
        return value

    return parse


def apply_tuned(args: argparse.Namespace) -> None:
    """``--tuned``: the temperature, selection rule, draw knobs and re-masking pool the pipeline tuned
    for ``--policy`` at this NFE budget on this checkpoint (``results/tuning/<policy>.json``, the
    tuning draw's choice)."""
    path = Path(args.results_dir) / "tuning" / f"{args.policy}.json"
    if not path.is_file():
        raise UsageError(f"--tuned: {path} not found; `dvc repro sample@{args.policy}` tunes {args.policy!r}")
    log = json.loads(path.read_text(encoding="utf-8"))
    if Path(log["model"]).resolve() != Path(args.checkpoint).resolve():
        raise UsageError(f"--tuned: {path} was tuned on {log['model']}, not on {args.checkpoint}")
    if str(args.nfe) not in log["budgets"]:
        raise UsageError(f"--tuned: {path} has no NFE {args.nfe}; tuned budgets: {', '.join(log['budgets'])}")
    levels = log["budgets"][str(args.nfe)]["levels"]
    if args.level not in levels:
        raise UsageError(f"--level {args.level}: {path} has no tuning at that entropy level; tuned: {', '.join(levels)}")
    budget = levels[args.level]
    args.temperature, args.selection = budget["temperature"], budget["selection"]
    args.selection_temperature = budget["selection_temperature"]
    args.anneal, args.temperature_floor = budget["anneal"], budget["floor"]
    args.top_k_share, args.top_p = budget["top_k_share"], budget["top_p"]
    args.committed_budget = budget.get("committed_budget", args.committed_budget)  # the tuned re-masking pool


def cmd_sample(args: argparse.Namespace) -> None:
    if args.policy not in POLICIES:
        raise UsageError(f"unknown policy {args.policy!r}; valid policies: {', '.join(POLICIES)}")
    if args.tuned and args.steps is not None:
        raise UsageError("--tuned reads the settings tuned at an NFE budget: give --nfe, not --steps")
    if args.level != "text" and not args.tuned:
        raise UsageError("--level chooses which of the pipeline's tuned settings --tuned reads: give --tuned")
    if args.steps is None:
        try:
            args.steps = steps_for_nfe(args.policy, args.nfe)
        except ValueError as exc:
            raise UsageError(f"--nfe: {exc}") from None
    if args.tuned:
        apply_tuned(args)
    if args.anneal == "constant" and args.temperature_floor != 0:
        raise UsageError("--temperature-floor is the last step's temperature of --anneal linear")
    model, tok, info = _load_diffusion_model(args.checkpoint, args.device, args.policy,
                                             temperature_span(args.anneal, args.temperature, args.temperature_floor))
    trained_on = info.get("mask_schedule")
    args.schedule = args.schedule or trained_on or "linear"
    if trained_on and args.schedule != trained_on:
        raise UsageError(f"--schedule {args.schedule}: {args.checkpoint} was trained on the {trained_on} masking "
                         f"schedule; sample it with --schedule {trained_on}")
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
        steps=args.steps, policy=args.policy, schedule=args.schedule, temperature=args.temperature,
        anneal=args.anneal, temperature_floor=args.temperature_floor, top_k_share=args.top_k_share, top_p=args.top_p,
        randomness_strength=args.randomness, selection=args.selection, selection_temperature=args.selection_temperature,
        committed_budget=args.committed_budget, batch_size=args.batch_size)
    known = prefix_prompt(prompt_ids, args.num_samples, args.length, tok.mask_id)
    result = diffusion_generate(model, args.num_samples, args.length, options, seed=args.seed, known=known,
                                progress=True)
    lines = [
        json.dumps({
            "text": tok.decode(row.tolist()), "policy": args.policy, "steps": args.steps, "nfe": result.nfe,
            "seed": args.seed, "index": i, "length": args.length, "schedule": args.schedule,
            "temperature": args.temperature, "anneal": args.anneal, "temperature_floor": args.temperature_floor,
            "top_k_share": args.top_k_share, "top_p": args.top_p, "selection": args.selection,
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


def _text_to_score(args: argparse.Namespace) -> str:
    if args.file is None:
        text = args.text
    else:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}: not valid UTF-8 at byte offset {exc.start}") from None
    if not text:
        raise UsageError("the text to score is empty")
    return text


def _choose_score(args: argparse.Namespace, info: dict) -> tuple[str, str]:
    """The score to use and why: ``--score``, else the best one measured for this checkpoint."""
    critic_trained = info.get("alpha", 0) > 0
    if args.score == "critic" and not critic_trained:
        raise UsageError(f"--score critic: {args.checkpoint} was trained with alpha = 0, so its critic head is "
                         "untrained; use --score loo or models/multitask")
    if args.score != "best":
        return args.score, "chosen with --score"
    metrics = Path(args.results_dir) / "evaluate_critic" / "metrics.json"
    trained_here = Path(args.checkpoint).resolve() == Path(args.models_dir, "multitask").resolve()
    measured = measured_aurocs(metrics) if trained_here else {}
    chosen = best_score(measured, critic_trained)
    if not measured:
        return chosen, f"no detection measured for {args.checkpoint} ({metrics}): the generator's own score"
    table = ", ".join(f"{s} {a:.3f}" for s, a in sorted(measured.items(), key=lambda kv: -kv[1]))
    return chosen, f"the best measured detector (refreshed-target AUROC: {table}; {metrics})"


def cmd_score(args: argparse.Namespace) -> None:
    text = _text_to_score(args)
    model, tok, info = _load_diffusion_model(args.checkpoint, args.device, policy=None)
    if args.map_unknown is not None:
        if args.map_unknown not in tok.stoi:
            raise UsageError(f"--map-unknown {args.map_unknown!r} is itself outside the vocabulary")
        text, replaced = map_unknown(text, tok, args.map_unknown)
        if replaced:
            print("remask: mapped characters outside the vocabulary: "
                  + ", ".join(f"{k!r}->{v!r}" for k, v in replaced.items()), file=sys.stderr)
    try:
        ids = tok.encode(text)
    except DataError as exc:
        raise UsageError(f"the text has {exc} (--map-unknown ' ' maps them)") from None
    score, why = _choose_score(args, info)
    print(f"remask: score {score} ({COST[score]}): {why}", file=sys.stderr)
    # read as the start of a line (the corpus's texts are lines of plays): a newline before it is
    # context, never scored, so that the first character is not judged without any left context
    line_start = "\n" in tok.stoi and not text.startswith("\n")
    probs = error_scores(model, ([tok.stoi["\n"]] if line_start else []) + ids, score)[int(line_start):]
    spans = top_spans(probs, args.top, text)
    marked = {i for s, e, _ in spans for i in range(s, e)}
    if args.threshold is not None:
        marked |= {i for i, p in enumerate(probs) if p > args.threshold}
    if args.json:
        print(json.dumps({"text": text, "score": score, "error_prob": [round(p, 6) for p in probs],
                          "suspects": sorted(marked),
                          "top": [{"start": s, "end": e, "text": text[s:e], "error_prob": round(p, 6)}
                                  for s, e, p in spans]}))
        return
    if sys.stdout.isatty():
        print("".join(_highlight(c, i in marked) for i, c in enumerate(text)))
    else:
        print(text)
    for s, e, p in spans:
        print(f"{s}\t{text[s:e]!r}\t{p:.3f}")


def _highlight(char: str, marked: bool) -> str:
    if not marked or char == "\n":
        return char
    return f"\x1b[1;37;41m{char}\x1b[0m"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="remask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sample = sub.add_parser("sample", help="generate text by masked diffusion with a re-masking policy")
    sample.add_argument("--checkpoint", default="models/multitask", help="model folder (default: models/multitask)")
    sample.add_argument("--policy", default="confidence", help=f"one of: {', '.join(POLICIES)}")
    budget = sample.add_mutually_exclusive_group()
    budget.add_argument("--nfe", type=_positive("--nfe"), default=32,
                        help="forward passes per sample (default 32); the steps follow from the policy's cost, as in "
                             "the pipeline (critic: 16 steps at NFE 32)")
    budget.add_argument("--steps", type=_positive("--steps"), default=None, help="sampler steps, whatever they cost")
    sample.add_argument("--tuned", action="store_true",
                        help="the temperature and selection the pipeline tuned for this policy, checkpoint and NFE "
                             "(results/tuning/<policy>.json)")
    sample.add_argument("--level", choices=("text", "second"), default="text",
                        help="with --tuned: the settings tuned for the test text's entropy (default) or for the "
                             "pipeline's second, lower entropy level (sample.tuning.second_level)")
    sample.add_argument("--results-dir", default="results", help="where --tuned reads the tuning logs")
    sample.add_argument("--num-samples", type=_positive("--num-samples"), default=4)
    sample.add_argument("--length", type=_positive("--length"), default=None,
                        help="characters per sample (default: the model's block_size)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--prompt", default="", help="text fixed at the start of every sample")
    sample.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="the unmasking schedule over the steps (default: the one the checkpoint was trained on)")
    sample.add_argument("--temperature", type=_number("--temperature", 0, low_open=True), default=1.0)
    sample.add_argument("--anneal", choices=ANNEALING, default="constant",
                        help="the temperature over the steps: constant, or linear from --temperature to "
                             "--temperature-floor at the last step (x-transformers anneals to 0)")
    sample.add_argument("--temperature-floor", type=_number("--temperature-floor", 0), default=0.0,
                        help="the last step's temperature of --anneal linear (0: greedy)")
    sample.add_argument("--top-k-share", type=_number("--top-k-share", 0, 1, low_open=True), default=1.0,
                        help="keep this share of the vocabulary, the most likely tokens, before each draw "
                             "(x-transformers' filter_thres 0.7 keeps 0.3)")
    sample.add_argument("--top-p", type=_number("--top-p", 0, 1, low_open=True), default=1.0,
                        help="nucleus truncation after the --top-k-share filter")
    sample.add_argument("--randomness", type=_number("--randomness", 0, 1), default=0.0,
                        help="noise blended into policy scores, 0..1")
    sample.add_argument("--selection", choices=SELECTIONS, default="gumbel",
                        help="how the tokens to re-mask are chosen from the scores (default: gumbel, as params.yaml)")
    sample.add_argument("--selection-temperature", type=_number("--selection-temperature", 0), default=1.0,
                        help="Gumbel noise scale at the first step, annealed to 0 (default: 1.0)")
    sample.add_argument("--committed-budget", type=_number("--committed-budget", 0, 1), default=None,
                        help="for a policy that may re-mask committed tokens: keep the choice among the tokens just "
                             "filled and re-mask this share of the committed ones besides (0..1; default: the "
                             "policy's own pool)")
    sample.add_argument("--batch-size", type=_positive("--batch-size"), default=64)
    sample.add_argument("--device", default="auto")
    sample.add_argument("--out", help="write JSON lines here (default: stdout)")
    sample.set_defaults(func=cmd_sample)

    score = sub.add_parser("score", help="how suspect each character of a text is (an error probability)")
    score.add_argument("--checkpoint", default="models/multitask")
    source = score.add_mutually_exclusive_group(required=True)
    source.add_argument("--text")
    source.add_argument("--file")
    score.add_argument("--score", choices=("best", *MEASURED_AS), default="best",
                       help="loo: 1 - the generator's leave-one-out probability (one pass per character); critic: the "
                            "critic head (one pass per window); best (default): the one with the higher measured "
                            "refreshed-target AUROC for this checkpoint")
    score.add_argument("--top", type=_positive("--top"), default=TOP_SUSPECTS, help="how many suspects to name")
    score.add_argument("--threshold", type=_number("--threshold", 0, 1), default=None,
                       help="also mark every character above this error probability")
    score.add_argument("--map-unknown", metavar="CHAR", default=None,
                       help="map characters outside the vocabulary (curly quotes and dashes to plain ones, accents "
                            "dropped, anything else to CHAR) instead of refusing them; they are reported")
    score.add_argument("--json", action="store_true", help="print every number as JSON")
    score.add_argument("--models-dir", default="models", help="where the pipeline's models are (for --score best)")
    score.add_argument("--results-dir", default="results", help="where the pipeline's measurements are")
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
