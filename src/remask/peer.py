"""The best public peer, trained and judged here: lucidrains' x-transformers self-critic.

``NonAutoregressiveWrapper(self_token_critic=True)`` of ``x-transformers==2.31.10`` (an optional
dependency, ``pip install -e '.[peer]'``; ``make study`` installs it) is the closest public
implementation of the seed's idea: a critic head on the shared trunk, trained jointly, scoring the
tokens to re-mask in an extra pass per step. This module runs *its* code, loss and ``generate()``,
and adds only what the comparison needs around it:

- :func:`build_peer`: its ``TransformerWrapper`` + ``Encoder`` at our model's width, depth, heads
  and block size, with tied embeddings and rotary positions over the whole head, so that its
  parameter count is ours to within 0.2% at the defaults (both are recorded);
- :func:`save_peer` / :func:`load_peer`: its weights with safetensors, checked tensor by tensor on
  loading, its configuration in ``config.json``; :mod:`remask.peer_training` trains it with its
  ``forward()`` loss inside our run's settings, and :class:`PeerModel` gives it our model's
  interface, so that our validation scores it on the same windows and masks as our models;
- :func:`peer_generate`: its ``generate()`` with its forward passes counted by a hook on its
  trunk, :func:`peer_draw_at` the same as a :data:`remask.tuning.DrawAt`, so its start temperature and its
  critic-score noise go through the search every row gets.

Its recipe differs from ours (``nonautoregressive_wrapper.py`` of 2.31.10, line numbers in the
README): BERT's kept / random tokens among the masked ones, a critic label on *every* position
(also where the critic saw the clean token), a sampled token's temperature drawn uniformly per
batch, top-k filtering and a temperature annealed to 0 at generation, and re-masking only among
the tokens just filled. One switch is not its default: ``use_simple_mdlm_loss_weight`` is off.
At 2.31.10 that weight is ``grad / (1 - value)`` of its masking schedule (lines 157-163), which is
negative for every decreasing schedule (``-1 / t`` for ``linear``), so the default generator loss
is a negative cross-entropy and minimising it pushes the generator away from the data; without it
the loss is MaskGIT's plain cross-entropy on the masked positions (lines 354-357).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_model
from torch import nn

from remask import atomic, checkpoint
from remask.config import ModelSection, PeerSection, SampleSection
from remask.data import CharTokenizer
from remask.errors import CheckpointError, ConfigError
from remask.model import MASK_LOGIT, DiffusionTransformer, ModelConfig
from remask.runtime import autocast

if TYPE_CHECKING:  # the peer's training stage must not depend on the sampling records
    from remask.records import Candidate, MasksLeft

PACKAGE, VERSION = "x-transformers", "2.31.10"
INSTALL_HINT = "pip install -e '.[peer]' (make study installs it)"
CRITIC_TRUNK = "token_critic.net."  # its SelfCritic holds the generator's trunk itself


@dataclass(frozen=True)
class PeerConfig:
    """What builds the peer; saved in its ``config.json``."""

    vocab_size: int
    mask_id: int
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    no_replace_prob: float
    random_token_prob: float
    critic_loss_weight: float
    attn_flash: bool

    @property
    def causal(self) -> bool:
        """Bidirectional, as our samplers require of a diffusion model."""
        return False

    @classmethod
    def of(cls, model: ModelSection, peer: PeerSection, tokenizer: CharTokenizer) -> "PeerConfig":
        """At the validated ``model`` section's size (its heads divide its width)."""
        return cls(tokenizer.vocab_size, tokenizer.mask_id, model.n_layer, model.n_head, model.n_embd,
                   model.block_size, peer.no_replace_prob, peer.random_token_prob, peer.critic_loss_weight,
                   peer.attn_flash)


def require_x_transformers() -> None:
    """Refuse, with the command that installs it, where the pinned x-transformers is missing."""
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"the study's peer needs the optional dependency {PACKAGE}=={VERSION}: "
                          f"{INSTALL_HINT}") from None
    if version != VERSION:
        raise ConfigError(f"{PACKAGE} {version} is installed; the peer is pinned at {VERSION} (the README's line "
                          f"references are to it): {INSTALL_HINT}")


def build_peer(cfg: PeerConfig) -> nn.Module:
    """Its ``NonAutoregressiveWrapper`` with ``self_token_critic=True`` at ``cfg``'s size."""
    require_x_transformers()
    from x_transformers import Encoder, TransformerWrapper
    from x_transformers.nonautoregressive_wrapper import NonAutoregressiveWrapper

    head_dim = cfg.n_embd // cfg.n_head
    net = TransformerWrapper(
        num_tokens=cfg.vocab_size, max_seq_len=cfg.block_size, tie_embedding=True, use_abs_pos_emb=False,
        attn_layers=Encoder(dim=cfg.n_embd, depth=cfg.n_layer, heads=cfg.n_head, attn_dim_head=head_dim,
                            rotary_pos_emb=True, rotary_emb_dim=head_dim, ff_no_bias=True, attn_flash=cfg.attn_flash))
    return NonAutoregressiveWrapper(
        net, mask_id=cfg.mask_id, self_token_critic=True, schedule="linear", can_mask_prev_unmasked=False,
        no_replace_prob=cfg.no_replace_prob, random_token_prob=cfg.random_token_prob,
        critic_loss_weight=cfg.critic_loss_weight, use_simple_mdlm_loss_weight=False)


class PeerModel(nn.Module):
    """The peer behind our model's interface (``model(idx, head=...)``, ``config.mask_id``), so that
    our validation scores it on the same windows and masks as our models, and our sampler draws
    from its generator. Like ours, its generator never writes ``[MASK]`` here (its own ``generate()``
    can: that logit is kept there)."""

    def __init__(self, wrapper: nn.Module, cfg: PeerConfig):
        super().__init__()
        self.wrapper, self.config = wrapper, cfg

    def forward(self, idx: torch.Tensor, head: str = "lm") -> torch.Tensor:
        if head == "lm":
            logits = self.wrapper.net(idx)
            return logits.index_fill(-1, torch.tensor([self.config.mask_id], device=idx.device), MASK_LOGIT)
        if head == "critic":
            return self.wrapper.token_critic(idx).squeeze(-1)
        raise ValueError(f"head must be 'lm' or 'critic', got {head!r}")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ours_parameter_count(model: ModelSection, tokenizer: CharTokenizer) -> int:
    """Our diffusion model's parameter count at the same settings, for the record."""
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id, **model.model_dump())
    return parameter_count(DiffusionTransformer(cfg))


def peer_nfe(steps: int) -> int:
    """Forward passes of its ``generate()``: the fill (line 228) and the critic (line 251) at every
    step, the last one included, where the critic's scores are no longer used."""
    return 2 * steps


def peer_steps_for_nfe(budget: int) -> int:
    steps = budget // 2
    if steps < 1:
        raise ValueError(f"an NFE budget of {budget} allows no step of the peer (two passes per step)")
    return steps


def save_peer(out_dir: Path, wrapper: nn.Module, info: dict) -> None:
    """Weights with safetensors (the trunk the critic shares stored once), ``info`` as ``config.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out_dir / checkpoint.WEIGHTS) as tmp:
        save_model(wrapper, str(tmp))
    atomic.write_json(out_dir / checkpoint.CONFIG, info)


def load_peer(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CharTokenizer, dict]:
    """The saved peer (safetensors, checked tensor by tensor), its tokenizer and ``config.json``."""
    raw = checkpoint.read_config(directory)
    try:
        cfg = PeerConfig(**raw["peer"])
        tokenizer = CharTokenizer.from_dict(raw["tokenizer"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{Path(directory) / checkpoint.CONFIG}: malformed: {exc}") from None
    wrapper = build_peer(cfg)
    path = Path(directory) / checkpoint.WEIGHTS
    state = checkpoint.read_weights(path)
    # the critic runs the same trunk: safetensors stores the shared tensors once, under net.
    state |= {f"{CRITIC_TRUNK}{k[4:]}": v for k, v in state.items() if k.startswith("net.")}
    checkpoint.check_state_dict(wrapper, state, path)
    wrapper.load_state_dict(state)
    return wrapper.to(device).eval(), tokenizer, raw


def load_peer_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[PeerModel, CharTokenizer, dict]:
    """The saved peer's generator behind our model's interface, for our sampler, with a training
    record in our checkpoints' terms (:func:`remask.policies.untrained_inputs`): a diffusion
    generator whose critic is not ours (its labels and fill temperatures differ), so that no policy
    reading our critic runs on it."""
    wrapper, tokenizer, raw = load_peer(directory, device)
    record = {"objective": "diffusion", "alpha": 0.0, "critic": None, "self_correct": 0.0,
              "mask_schedule": "linear", "peer": raw["peer"]}  # build_peer's schedule
    return PeerModel(wrapper, PeerConfig(**raw["peer"])), tokenizer, record


# ---------------------------------------------------------------------------------------------
# sampling


@torch.no_grad()
def peer_generate(wrapper: nn.Module, num_samples: int, steps: int, temperature: float, noise: float,
                  filter_thres: float, seed: int, batch_size: int) -> tuple[torch.Tensor, int]:
    """``num_samples`` sequences of its ``generate()`` at ``steps`` steps: ``(tokens, NFE per sample)``.

    ``temperature`` is its ``start_temperature`` (annealed to 0 over the steps), ``noise`` its
    ``noise_level_scale`` (Gumbel noise on the critic's scores, annealed alike). Its random draws
    use torch's global generator, seeded here inside a fork so the caller's stream is untouched.
    Passes are counted by a hook on its trunk, which both the fill and the critic run through."""
    device = next(wrapper.parameters()).device
    calls = 0

    def count(*_) -> None:
        nonlocal calls
        calls += 1

    hook = wrapper.net.register_forward_hook(count)
    wrapper.steps = steps
    outputs = []
    try:
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, num_samples, batch_size):
                calls = 0
                with autocast(device):
                    outputs.append(wrapper.generate(batch_size=min(batch_size, num_samples - start),
                                                    start_temperature=temperature, filter_thres=filter_thres,
                                                    noise_level_scale=noise).cpu())
                if calls != peer_nfe(steps):
                    raise AssertionError(f"counted {calls} forward passes of the peer, expected {peer_nfe(steps)}")
    finally:
        hook.remove()
    return torch.cat(outputs), calls


def peer_draw_at(wrapper: nn.Module, tokenizer: CharTokenizer, cfg: SampleSection, filter_thres: float,
                 stand_in: str, masks_left: "MasksLeft"):
    """The peer as a :data:`remask.tuning.DrawAt`: at each NFE budget, its ``generate()`` at the
    steps the budget allows; a selection rule's noise temperature is its critic noise scale
    (``topk``: none), the temperature its start temperature.

    Its sampler can draw the ``[MASK]`` token itself (its output layer has one, which our models'
    never predict) and then leaves it in the text. Such a token is shown to the judge as
    ``stand_in`` (the data's unknown character) and counted in ``masks_left`` per budget and draw,
    so that the report can say how many there were."""
    if cfg.length != wrapper.max_seq_len:
        raise ConfigError(f"sample.length {cfg.length}: the peer generates its block size, {wrapper.max_seq_len}")
    if stand_in not in tokenizer.stoi:
        raise ConfigError(f"data.unknown_char {stand_in!r} is not in the vocabulary: it cannot stand in for [MASK]")

    def draw_at(budget: int):
        steps = peer_steps_for_nfe(budget)

        def draw(temperature: float, candidate: Candidate, seed: int, n: int) -> tuple[list[str], int]:
            rule = candidate.selection
            tokens, nfe = peer_generate(wrapper, n, steps, temperature, rule.temperature, filter_thres, seed,
                                        cfg.batch_size)
            masks_left.record(budget, seed, temperature, rule, int((tokens == tokenizer.mask_id).sum()))
            return [tokenizer.decode(ids.tolist(), mask=stand_in) for ids in tokens], nfe
        return draw, steps
    return draw_at
