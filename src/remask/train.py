"""The training loop: masked-diffusion multi-task (generator + critic) or causal (the judge).

One linear loop serves one device or many (``torchrun`` + DDP, one branch in
:func:`remask.runtime.init_world`). All randomness of a step is drawn for the *global* batch
(:mod:`remask.noise`) and each rank takes its slice, so a DDP run sees exactly the data of a
single-process run with the same global batch, and resuming restores the generator state.
The losses live in :mod:`remask.objectives`, the critic's input and labels in
:mod:`remask.critic_targets`, the validation metrics in :mod:`remask.validation`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from remask import checkpoint
from remask.config import ConfigError, CriticSection, OptimSection, Params, TrainSection
from remask.data import CharTokenizer, fixed_windows, load_meta, load_split, sample_windows
from remask.model import CRITIC_PARAMETERS, DiffusionTransformer, ModelConfig
from remask.noise import draw_noise
from remask.objectives import AutoregressiveObjective, DiffusionObjective
from remask.runtime import World, autocast, barrier, close_world, init_world
from remask.validation import evaluate_autoregressive, evaluate_diffusion

Objective = Literal["diffusion", "autoregressive"]
EVAL_SEED_OFFSET = 1_000_003  # evaluation masks come from their own generator, never the training one
LOG_EVERY = 10  # steps between logged (averaged) training metrics
# the modules that decide what a training step computes: edited code never resumes a saved state
STEP_MODULES = ("model.py", "noise.py", "objectives.py", "critic_targets.py", "train.py", "schedules.py",
                "drawing.py", "data.py")


MODEL_KINDS = ("multitask", "generator_only", "judge")  # the quick tier's models, each its own training stage
# the critic settings generator_only is validated with (its untrained head, on the seed's label): fixed here
# rather than read from params, so that a critic lever never retrains the baseline
YARDSTICK_CRITIC = CriticSection(target="differs", fill_share=1.0, sample_temperature=0.7, sample_temperature_spread=1.3,
                                 label_scope="filled", detach_body=False, pos_weight=1.0, replace_visible=0.0,
                                 input="partial", rollout_share=0.0, row_share=0.5)


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


@dataclass(frozen=True)
class RunSpec:
    """What one training run trains, with which settings, and where it writes."""

    variant: str
    objective: Objective
    model: ModelConfig
    optim: OptimSection
    out_dir: Path
    live_dir: Path
    diffusion: TrainSection | None = None
    critic: CriticSection | None = None
    init_from: Path | None = None  # start from this model directory's weights (a fresh run only)
    frozen_generator: bool = False  # train the critic only: init_from's body and generator head stay as they are

    @property
    def alpha(self) -> float:
        return self.diffusion.alpha if self.diffusion is not None else 0.0

    @property
    def uses_critic(self) -> bool:
        return self.objective == "diffusion" and self.alpha > 0

    def fingerprint(self, data_meta: dict) -> str:
        """Everything that changes the result; a saved state resumes only under the same one."""
        payload = {
            "variant": self.variant,
            "objective": self.objective,
            "model": self.model.to_dict(),
            "optim": self.optim.model_dump(exclude={"resume", "device", "compile"}),
            "diffusion": self.diffusion.model_dump(exclude={"resume", "device", "compile"}) if self.diffusion else None,
            "critic": self.critic.model_dump() if self.critic else None,
            "data": data_meta.get("bin_sha256"),
            "code": _code_digest(),
            "init_from": checkpoint.weights_digest(self.init_from) if self.init_from else None,
        }
        if self.frozen_generator:  # a key only where set: the fingerprints of every other run stay as they were
            payload["frozen_generator"] = True
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _code_digest() -> str:
    import remask

    digest = hashlib.sha256()
    for name in STEP_MODULES:
        digest.update((Path(remask.__file__).parent / name).read_bytes())
    return digest.hexdigest()


def run_spec(params: Params, variant: str, meta: dict, models_dir: Path = Path("models"),
               results_dir: Path = Path("results")) -> RunSpec:
    """Turn validated params into the run of one model of the quick tier (``variant``: a model kind of
    :data:`MODEL_KINDS`)."""
    tokenizer = CharTokenizer.from_dict(meta["tokenizer"])
    section = params.judge.model if variant == "judge" else params.model
    model = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        mask_id=tokenizer.mask_id,
        causal=variant == "judge",
        **section.model_dump(),
    )
    common = dict(variant=variant, model=model, out_dir=models_dir / variant, live_dir=results_dir / "train" / variant)
    if variant == "judge":
        return RunSpec(objective="autoregressive", optim=params.judge.train, **common)
    if variant == "multitask":
        return RunSpec(objective="diffusion", optim=params.train, diffusion=params.train, critic=params.critic, **common)
    # alpha = 0: no critic pass. The validation's critic numbers (of the untrained head) use the fixed
    # YARDSTICK_CRITIC, so that the stage reads no `critic` params and a critic lever does not retrain it.
    diffusion = params.train.model_copy(update={"alpha": 0.0})
    return RunSpec(objective="diffusion", optim=diffusion, diffusion=diffusion, critic=YARDSTICK_CRITIC, **common)


def study_run_spec(params: Params, name: str, meta: dict, models_dir: Path = Path("models")) -> RunSpec:
    """A study variant: trained from scratch exactly like ``multitask`` (same data, steps and seed),
    with its overrides, into ``models/study/<name>``; a post-hoc critic (``frozen_generator``) starts
    from that model's weights instead and trains its critic only."""
    if name not in params.study.variants:
        raise ConfigError(f"--study-variant {name!r} is not in study.variants: {', '.join(params.study.variants)}")
    spec = run_spec(params.for_variant(name), "multitask", meta)
    spec = replace(spec, variant=f"study/{name}", out_dir=models_dir / "study" / name,
                   live_dir=Path("results/study/train") / name)
    frozen = params.study.variants[name].frozen_generator
    return spec if frozen is None else replace(spec, init_from=models_dir / frozen, frozen_generator=True)


SCALE_MODELS = Path("models/scale")  # models/scale/<point>/<model>, and the axis's judge in models/scale/judge
SCALE_RESULTS = Path("results/scale")


def scale_run_spec(params: Params, point: str, name: str, meta: dict) -> RunSpec:
    """Model ``name`` of the scale axis at compute point ``point`` (``scale.points`` and
    ``scale.models``: trained like ``multitask`` with both overrides, or a post-hoc critic on the
    point's own frozen generator) into ``models/scale/<point>/<name>``."""
    axis = params.scale
    if point not in axis.points:
        raise ConfigError(f"--scale-point {point!r} is not in scale.points: {', '.join(axis.points)}")
    if name not in axis.models:
        raise ConfigError(f"--scale-model {name!r} is not in scale.models: {', '.join(axis.models)}")
    spec = run_spec(params.for_scale(point, name), "multitask", meta)
    spec = replace(spec, variant=f"scale/{point}/{name}", out_dir=SCALE_MODELS / point / name,
                   live_dir=SCALE_RESULTS / "train" / point / name)
    frozen = axis.models[name].frozen_generator
    return spec if frozen is None else replace(spec, init_from=SCALE_MODELS / point / frozen, frozen_generator=True)


def scale_judge_spec(params: Params, meta: dict) -> RunSpec:
    """The scale axis's judge (``scale.judge`` over the ``judge`` section) into ``models/scale/judge``."""
    judge = params.scale_judge()
    spec = run_spec(params.model_copy(update={"judge": judge}), "judge", meta)
    return replace(spec, variant="scale/judge", out_dir=SCALE_MODELS / "judge", live_dir=SCALE_RESULTS / "train" / "judge")


def freeze_generator(model: DiffusionTransformer) -> None:
    """Leave only the critic's parameters trainable (its head and blocks, ``model.critic_logits``):
    the body and the generator head keep the weights they start from, so a post-hoc critic costs
    the generator nothing. Called before the optimiser is built, which then holds the critic's only."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(CRITIC_PARAMETERS))


def learning_rate(step: int, cfg: OptimSection) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at ``max_steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def alpha_at(step: int, cfg: TrainSection | None) -> float:
    if cfg is None or cfg.alpha == 0:
        return 0.0
    if cfg.alpha_warmup_steps == 0:
        return cfg.alpha
    return cfg.alpha * min(1.0, (step + 1) / cfg.alpha_warmup_steps)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, step: int,
                   cfg: OptimSection) -> float:
    """One update at ``step``: the schedule's learning rate, the gradient of ``loss`` (its norm
    clipped at ``cfg.grad_clip``), the optimiser's step. Returns the learning rate."""
    lr = learning_rate(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return lr


def make_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms and biases), as in nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    seconds: float = 0.0


def _save(state: checkpoint.TrainingState, spec: RunSpec, tokenizer: CharTokenizer, fingerprint: str) -> None:
    """The resumable state and the model directory (weights and ``config.json``, the training record)."""
    state.save(spec.out_dir / checkpoint.TRAIN_STATE, fingerprint)
    checkpoint.save_model(spec.out_dir, state.model, tokenizer, {
        "variant": spec.variant, "objective": spec.objective, "alpha": spec.alpha, "step": state.step,
        "fingerprint": fingerprint, "critic": spec.critic.model_dump() if spec.uses_critic else None,
        "self_correct": spec.diffusion.self_correct if spec.diffusion else 0.0,
        "mask_schedule": spec.diffusion.mask_schedule if spec.diffusion else None,
        **({"frozen_generator": str(spec.init_from)} if spec.frozen_generator else {}),
    })


def train(spec: RunSpec, data_dir: str | Path, stop_after: int | None = None, progress: bool = True) -> TrainResult:
    """Train ``spec`` on the prepared data in ``data_dir``; resumable, and DDP-aware.

    ``stop_after`` ends the run after that many steps (with a checkpoint), as an interruption
    would; the tests use it to check that resuming reproduces an uninterrupted run.
    """
    world, device = init_world(spec.optim.device)
    try:
        return _train(spec, Path(data_dir), world, device, stop_after, progress)
    finally:
        close_world(world)


def _train(
    spec: RunSpec, data_dir: Path, world: World, device: torch.device, stop_after: int | None, progress: bool
) -> TrainResult:
    cfg = spec.optim
    if cfg.batch_size % world.size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world.size} processes")
    meta = load_meta(data_dir)
    tokenizer = CharTokenizer.from_dict(meta["tokenizer"])
    train_data, val_data = load_split(data_dir, "train", meta), load_split(data_dir, "val", meta)
    fingerprint = spec.fingerprint(meta)
    block = spec.model.block_size + (1 if spec.objective == "autoregressive" else 0)
    state = _restore_or_start(spec, fingerprint, world)
    state.to(device)
    step_fn = _objective(spec, state.model, world, device)
    val_windows = fixed_windows(val_data, cfg.eval_batches * cfg.batch_size, block)
    live = _open_live(spec, state.resumed_from) if world.is_main else None

    rows = slice(world.rank * cfg.batch_size // world.size, (world.rank + 1) * cfg.batch_size // world.size)
    last_step = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc=f"train {spec.variant}", unit="step",
               disable=not (progress and world.is_main), dynamic_ncols=True)
    metrics: dict[str, float] = {}
    pending: list[dict[str, torch.Tensor]] = []  # losses since the last log, still on the device: no sync per step
    started = time.perf_counter()
    state.model.train()
    while state.step < last_step:
        out = _forward(spec, step_fn, train_data, block, state, world, rows, device)
        lr = optimizer_step(state.model, state.optimizer, out["loss"], state.step, cfg)
        state.step += 1
        bar.update(1)
        pending.append({name: value.detach() for name, value in out.items()})
        log_now = state.step % LOG_EVERY == 0 or state.step == last_step
        eval_now = state.step % cfg.eval_every == 0 or state.step == cfg.max_steps
        save_now = state.step % cfg.checkpoint_every == 0 or state.step == last_step
        if log_now or eval_now or save_now:  # a non-finite loss never reaches a checkpoint
            _raise_if_not_finite(spec, pending, state.step, bar)
        if log_now:
            means = {name: float(torch.stack([p[name] for p in pending]).mean()) for name in pending[0]}
            if live is not None:
                _log_running(live, state.step, means, lr)
            bar.set_postfix(loss=f"{means['loss']:.3f}")
            pending.clear()
        if eval_now:
            if world.is_main:
                metrics = _validate(spec, state.model, val_windows)
                _log_validation(live, state.step, metrics)
            barrier(world)
        if save_now:
            if world.is_main:
                _save(state, spec, tokenizer, fingerprint)
            barrier(world)
    bar.close()
    if live is not None:
        live.step = state.step
        live.make_summary()
    return TrainResult(state.step, metrics, state.resumed_from, time.perf_counter() - started)


def _restore_or_start(spec: RunSpec, fingerprint: str, world: World) -> checkpoint.TrainingState:
    """A fresh run (from ``init_from``'s weights if given), or the saved state of the same run."""
    cfg = spec.optim
    torch.manual_seed(cfg.seed)
    model = DiffusionTransformer(spec.model)
    if spec.frozen_generator:
        freeze_generator(model)
    state = checkpoint.TrainingState(model, make_optimizer(model, cfg), torch.Generator().manual_seed(cfg.seed))
    say = print if world.is_main else (lambda *_: None)
    path = spec.out_dir / checkpoint.TRAIN_STATE
    if cfg.resume and state.restore(path, fingerprint, cfg.max_steps, lambda why: say(f"[{spec.variant}] {why}")):
        say(f"[{spec.variant}] resuming from {path} at step {state.step}")
    if state.resumed_from is None and spec.init_from is not None:
        fresh = checkpoint.init_from_checkpoint(model, spec.init_from)
        say(f"[{spec.variant}] starting from the weights of {spec.init_from}"
            + (f"; {', '.join(fresh)} start fresh (another shape)" if fresh else ""))
    return state


def _objective(spec: RunSpec, model: DiffusionTransformer, world: World, device: torch.device) -> nn.Module:
    """The loss module, wrapped in DDP when distributed and compiled when asked."""
    if spec.objective == "diffusion":
        objective: nn.Module = DiffusionObjective(model, spec.diffusion, spec.critic)
    else:
        objective = AutoregressiveObjective(model)
    if world.distributed:
        objective = DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not spec.uses_critic,
        )
    return torch.compile(objective) if spec.optim.compile else objective


def _forward(
    spec: RunSpec, step_fn: nn.Module, train_data: torch.Tensor, block: int, state: checkpoint.TrainingState, world: World,
    rows: slice, device: torch.device,
) -> dict[str, torch.Tensor]:
    """Draw the global batch and its noise, run this rank's slice through the objective.

    Losses are normalised by global counts and scaled by the world size, so that DDP's gradient
    average equals the single-process gradient of the global batch.
    """
    cfg = spec.optim
    window = sample_windows(train_data, cfg.batch_size, block, state.generator)
    if spec.objective == "autoregressive":
        norm = {"tokens": cfg.batch_size * (block - 1) / world.size}
        with autocast(device):
            return step_fn(window[rows].to(device), _scalars(norm, device))
    diffusion = spec.diffusion
    noise = draw_noise(cfg.batch_size, block, diffusion.mask_schedule, diffusion.mask_eps, state.generator,
                       spec.critic if spec.uses_critic else None, spec.model.mask_id, diffusion)
    scored = noise.mask if noise.corrupt is None else noise.mask | noise.corrupt
    norm = {"masked": max(int(scored.sum()), 1) / world.size, "tokens": noise.mask.numel() / world.size}
    if spec.uses_critic:
        norm["critic"] = max(int(noise.critic_view().critic_scope(spec.critic.label_scope).sum()), 1) / world.size
    alpha = torch.tensor(alpha_at(state.step, diffusion), dtype=torch.float32, device=device)
    with autocast(device):
        return step_fn(window[rows].to(device), noise.rows(rows.start, rows.stop).to(device), alpha,
                       _scalars(norm, device))


def _scalars(values: dict[str, float], device: torch.device) -> dict[str, torch.Tensor]:
    """Per-step numbers as 0-dim tensors: ``torch.compile`` would recompile for each new float."""
    return {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in values.items()}


def _validate(spec: RunSpec, model: DiffusionTransformer, windows: torch.Tensor) -> dict[str, float]:
    cfg = spec.optim
    if spec.objective == "diffusion":
        return evaluate_diffusion(model, windows, spec.diffusion, spec.critic, cfg.seed + EVAL_SEED_OFFSET, cfg.batch_size)
    return evaluate_autoregressive(model, windows, cfg.batch_size)


# ---------------------------------------------------------------------------------------------
# DVCLive: the training curves under results/train/<variant>/


def _open_live(spec: RunSpec, resumed_from: int | None):
    """A DVCLive logger; a resumed run keeps the rows logged up to its checkpoint."""
    from dvclive import Live

    for stale in spec.out_dir.glob(".*.tmp"):  # left by a process killed while writing
        stale.unlink()
    if resumed_from is None:
        if spec.live_dir.exists():
            shutil.rmtree(spec.live_dir)
    else:
        _truncate_live_dir(spec.live_dir, resumed_from)
    return Live(str(spec.live_dir), dvcyaml=False, save_dvc_exp=False, resume=resumed_from is not None)


def _log_running(live, step: int, means: dict[str, float], lr: float) -> None:
    live.step = step
    for name, value in means.items():
        live.log_metric(f"train/{name}", value)
    live.log_metric("train/lr", lr)


def _raise_if_not_finite(spec: RunSpec, pending: list[dict[str, torch.Tensor]], step: int, bar: tqdm) -> None:
    """Stop at the first non-finite loss of the steps since the last log (one sync for all of them)."""
    losses = torch.stack([p["loss"] for p in pending])
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0, 0])
    bar.close()
    raise TrainingError(
        f"[{spec.variant}] loss is {float(losses[first])} at step {step - len(pending) + first}; stopping. "
        f"The last good checkpoint in {spec.out_dir} is kept."
    )


def _log_validation(live, step: int, metrics: dict[str, float]) -> None:
    live.step = step
    for name, value in metrics.items():
        live.log_metric(f"val/{name}", value)
    live.make_summary()


def _truncate_live_dir(live_dir: Path, step: int) -> None:
    """Drop logged rows past ``step``: they were logged after the checkpoint we resume from.

    A summary cut short by a kill is removed; DVCLive writes a new one at the next evaluation.
    """
    summary = live_dir / "metrics.json"
    if summary.is_file():
        try:
            json.loads(summary.read_text())
        except json.JSONDecodeError:
            summary.unlink()
    for tsv in live_dir.glob("plots/metrics/**/*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        col = header.split("\t").index("step")
        kept = [r for r in rows if int(r.split("\t")[col]) <= step]
        tsv.write_text("\n".join([header, *kept]) + "\n")
