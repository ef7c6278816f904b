"""GRPO (App. A, B.1): advantages and loss by hand, both KL forms, and trl.GRPOTrainer with β > 0."""

import pytest
import torch

from alignkd.lm.groundtruth import HFLanguageModel
from alignkd.lm.grpo import GRPOConfig, grpo_loss, train_grpo
from alignkd.objectives import k3
from alignkd.lm.reward import RewardOracle
from alignkd.lm.students import tiny_llama

V = 16


def fives_logprob(tokens, mask):
    return (torch.where(tokens == 5, -0.1, -3.0) * mask).sum(1) / mask.sum(1)


def test_loss_and_its_gradient_by_hand():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    logprob = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]], requires_grad=True)
    ref_logprob = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, 0.0, 0.0]])
    advantages = torch.tensor([2.0, -1.0])
    beta, length = 0.3, 4
    loss = grpo_loss(logprob, logprob.detach(), ref_logprob, advantages, mask, beta, "reward", 0.2, length)
    # ratio 1: loss = −Σ_i A_i·(number of tokens of i) / (B·L); its gradient is REINFORCE's −A_i/(B·L) per token
    assert float(loss) == pytest.approx(-(2.0 * 2 - 1.0 * 1) / (2 * length))
    loss.backward()
    torch.testing.assert_close(logprob.grad, -advantages[:, None] * mask / (2 * length))
    logprob.grad = None
    loss = grpo_loss(logprob, logprob.detach(), ref_logprob, advantages, mask, beta, "k3", 0.2, length)
    penalty = beta * (k3(logprob.detach(), ref_logprob) * mask).sum() / (2 * length)
    assert float(loss) == pytest.approx(-(2.0 * 2 - 1.0 * 1) / (2 * length) + float(penalty))
    loss.backward()  # ∂k3/∂θ = 1 − e^{ref−θ}
    expected = (-advantages[:, None] + beta * (1 - torch.exp(ref_logprob - logprob.detach()))) * mask / (2 * length)
    torch.testing.assert_close(logprob.grad, expected)


def test_clipping_stops_the_gradient_of_a_moved_ratio():
    mask = torch.ones(1, 1)
    logprob = torch.tensor([[0.5]], requires_grad=True)  # ρ = e^0.5 > 1.2 with A > 0: clipped, no gradient
    grpo_loss(logprob, torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([1.0]), mask, 0.1, "reward", 0.2, 1).backward()
    assert float(logprob.grad) == 0.0


def toy_run(seed=0, tokenizer=None, **overrides):
    settings = dict(n_iterations=12, batch_size=32, learning_rate=1e-2, beta=0.05, max_new_tokens=12,
                    eval_every=4, device="cpu")
    policy, reference = (HFLanguageModel(tiny_llama(V, seed=1), tokenizer, [0], eos_id=1, pad_id=2) for _ in range(2))
    return train_grpo(policy, reference, RewardOracle(fives_logprob), GRPOConfig(**{**settings, **overrides}),
                      seed=seed, progress=False)


@pytest.mark.parametrize("kl_form", ["k3", "reward"])
def test_short_run_raises_reward_and_is_reproducible(kl_form):
    run = toy_run(kl_form=kl_form)
    trajectory = run.trajectory
    assert list(trajectory.iteration) == [0, 4, 8, 12]
    assert trajectory.reward_mean.iloc[-1] > trajectory.reward_mean.iloc[0] + 1.0
    assert toy_run(kl_form=kl_form, n_iterations=4).trajectory.equals(trajectory.iloc[:2])


def test_trl_grpo_trainer_with_beta_raises_reward():
    from alignkd.lm.groundtruth import markov_tokenizer

    tokenizer = markov_tokenizer(V)  # <bos>=0 <eos>=1 <pad>=2, as tiny_llama's ids
    run = toy_run(backend="trl", tokenizer=tokenizer, n_iterations=8)
    trajectory = run.trajectory
    assert list(trajectory.iteration) == [0, 4, 8]
    assert trajectory.reward_mean.iloc[-1] > trajectory.reward_mean.iloc[0] + 1.0
    assert trajectory.kl.iloc[-1] > 0
    assert toy_run(backend="trl", tokenizer=tokenizer, n_iterations=8).trajectory.equals(trajectory)  # same seed


def test_trl_backend_inputs_fail_before_work():
    with pytest.raises(ValueError, match="kl_form"):
        GRPOConfig(backend="trl", kl_form="reward")
    with pytest.raises(ValueError, match="tokenizer"):
        toy_run(backend="trl", tokenizer=None)


@pytest.mark.parametrize("field, value, message", [
    ("bf16", True, "bf16"),
    ("batch_size", 1, "batch_size"),
    ("beta", 0.0, "beta"),
    ("scale_rewards", "batch", "scale_rewards"),
    ("backend", "vllm", "backend"),
])
def test_bad_config_fails_on_construction_naming_the_field(field, value, message):
    if torch.cuda.is_available() and field == "bf16":
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**{field: value})
