import pytest
import torch

from remask.model import MASK_LOGIT, DiffusionTransformer, ModelConfig


def make(causal=False, critic_head="linear"):
    torch.manual_seed(0)
    return DiffusionTransformer(ModelConfig(vocab_size=11, mask_id=10, n_layer=2, n_head=2, n_embd=16,
                                            block_size=12, causal=causal, critic_head=critic_head))


@pytest.mark.parametrize("critic_head", ["linear", "mlp"])
def test_shapes_per_head(critic_head):
    model = make(critic_head=critic_head)
    idx = torch.randint(0, 11, (3, 12))
    assert model(idx, head="lm").shape == (3, 12, 11)
    assert model(idx, head="critic").shape == (3, 12)
    lm, critic = model(idx, head="both")
    assert lm.shape == (3, 12, 11) and critic.shape == (3, 12)
    torch.testing.assert_close(critic, model(idx, head="critic"))
    with pytest.raises(ValueError, match="unknown head"):
        model(idx, head="value")


def test_generator_never_predicts_mask_and_heads_are_tied():
    model = make()
    logits = model(torch.randint(0, 11, (2, 12)))
    assert torch.all(logits[..., 10] == MASK_LOGIT)
    assert model.lm_head.weight is model.wte.weight


def test_bidirectional_sees_the_future_causal_does_not():
    idx = torch.randint(0, 10, (1, 12))
    changed = idx.clone()
    changed[0, -1] = (idx[0, -1] + 1) % 10
    for causal, expect_same in ((True, True), (False, False)):
        model = make(causal=causal).eval()
        same = torch.allclose(model(idx)[0, :-1], model(changed)[0, :-1])
        assert same == expect_same


def test_detached_critic_sends_no_gradient_to_the_body():
    model = make()
    model(torch.randint(0, 11, (2, 12)), head="critic", detach_critic=True).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is None
    assert model.critic_head.weight.grad is not None


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="longer than block_size 12"):
        make()(torch.zeros(1, 13, dtype=torch.long))
