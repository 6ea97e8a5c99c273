import pickle

import pytest
import torch

from remask import checkpoint
from remask.checkpoint import CheckpointError
from remask.data import CharTokenizer
from remask.model import DiffusionTransformer, ModelConfig


def saved(tmp_path, **overrides):
    tok = CharTokenizer("abcdefghij")
    sizes = dict(n_layer=1, n_head=2, n_embd=16, block_size=8) | overrides
    cfg = ModelConfig(vocab_size=tok.vocab_size, mask_id=tok.mask_id, **sizes)
    torch.manual_seed(0)
    model = DiffusionTransformer(cfg)
    checkpoint.save_model(tmp_path, model, tok, {"variant": "test"})
    return model


def test_round_trip_gives_identical_outputs(tmp_path):
    model = saved(tmp_path).eval()
    loaded, tok, info = checkpoint.load_model(tmp_path)
    idx = torch.randint(0, 11, (2, 8))
    torch.testing.assert_close(loaded(idx, head="both"), model(idx, head="both"), rtol=0, atol=0)
    assert info["variant"] == "test" and tok.mask_id == 10


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        checkpoint.load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="config.json: not found"):
        checkpoint.load_model(tmp_path)
    saved(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: not found"):
        checkpoint.load_model(tmp_path)


def test_truncated_weights_name_the_file(tmp_path):
    saved(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        checkpoint.load_model(tmp_path)


def test_wrong_shape_names_the_tensor(tmp_path):
    saved(tmp_path)
    # a config that promises a wider model than the weights hold
    import json
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model"]["n_embd"] = 32
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"tensor '[a-z_.0-9]+' has shape \(.*\), the model expects"):
        checkpoint.load_model(tmp_path)


def test_extra_layer_is_unexpected_tensor(tmp_path):
    saved(tmp_path, critic_head="mlp")
    import json
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model"]["critic_head"] = "linear"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"(unexpected tensor|is missing)"):
        checkpoint.load_model(tmp_path)


def test_malformed_config(tmp_path):
    saved(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint.load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model": {"vocab_size": 3, "colour": 1}, "tokenizer": {}}')
    with pytest.raises(CheckpointError, match="malformed"):
        checkpoint.load_model(tmp_path)


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch EXPLOITED",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "train_state.pt"
    with open(path, "wb") as handle:
        pickle.dump({"step": 1, "payload": _Exploit()}, handle)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load_train_state(path)
    assert not (tmp_path / "EXPLOITED").exists()
    # the same payload in torch's own zip format is refused too
    torch.save({"payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load_train_state(path)
    assert not (tmp_path / "EXPLOITED").exists()


def test_truncated_train_state(tmp_path):
    path = tmp_path / "train_state.pt"
    checkpoint.save_train_state(path, {"step": 3, "w": torch.ones(1000)})
    assert checkpoint.load_train_state(path)["step"] == 3
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        checkpoint.load_train_state(path)


def test_init_from_checkpoint_keeps_the_body_and_refreshes_a_critic_head_of_another_shape(tmp_path):
    source = saved(tmp_path)
    cfg = source.config
    same = DiffusionTransformer(cfg)
    assert checkpoint.init_from_checkpoint(same, tmp_path) == []
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(same.state_dict()[name], tensor, rtol=0, atol=0)
    torch.manual_seed(1)
    mlp = DiffusionTransformer(ModelConfig(**{**cfg.to_dict(), "critic_head": "mlp"}))
    head_before = {k: v.clone() for k, v in mlp.state_dict().items() if k.startswith("critic_head.")}
    fresh = checkpoint.init_from_checkpoint(mlp, tmp_path)
    assert set(fresh) == set(head_before)
    torch.testing.assert_close(mlp.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight, rtol=0, atol=0)
    for name, tensor in head_before.items():
        torch.testing.assert_close(mlp.state_dict()[name], tensor, rtol=0, atol=0)
    wider = DiffusionTransformer(ModelConfig(**{**cfg.to_dict(), "n_embd": 32}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor '[^']+' has shape \(16, 16\), the model expects \(32, 32\)"):
        checkpoint.init_from_checkpoint(wider, tmp_path)
    assert checkpoint.weights_digest(tmp_path) == checkpoint.weights_digest(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.weights_digest(tmp_path / "nope")


def test_one_training_state_restores_every_stream_and_refuses_an_older_format(tmp_path):
    """Our training and the peer's share checkpoint.TrainingState: it restores the weights, the
    optimiser, the run's generator and torch's and (when asked) Python's random streams; a state
    saved without one of them starts afresh and says so."""
    import random

    model = saved(tmp_path)
    state = checkpoint.TrainingState(model, torch.optim.AdamW(model.parameters()), torch.Generator().manual_seed(3),
                                     python_rng=True, step=5)
    random.seed(7)
    torch.manual_seed(8)
    state.save(tmp_path / "train_state.pt", "run-a")
    expected = (torch.rand(3, generator=state.generator), torch.rand(3), random.random())
    fresh = checkpoint.TrainingState(saved(tmp_path / "other"), torch.optim.AdamW(model.parameters()),
                                     torch.Generator(), python_rng=True)
    with torch.no_grad():
        for p in fresh.model.parameters():
            p.add_(1.0)  # other weights until restored
    said = []
    assert fresh.restore(tmp_path / "train_state.pt", "run-a", 10, said.append) and said == []
    assert fresh.step == fresh.resumed_from == 5
    assert torch.equal(torch.rand(3, generator=fresh.generator), expected[0])
    assert torch.equal(torch.rand(3), expected[1]) and random.random() == expected[2]
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.state_dict().values(), model.state_dict().values()))
    old = checkpoint.load_train_state(tmp_path / "train_state.pt")
    del old["python_rng"]
    checkpoint.save_train_state(tmp_path / "old.pt", old)
    assert not fresh.restore(tmp_path / "old.pt", "run-a", 10, said.append)
    assert said == [f"{tmp_path / 'old.pt'} holds no python_rng (saved by an older version); starting afresh"]
    assert not fresh.restore(tmp_path / "train_state.pt", "run-b", 10, said.append)  # other settings
