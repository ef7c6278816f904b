"""Our PPO (App. C.3): the loss pieces by hand, and a short run on a toy oracle."""

import pytest
import torch

from alignkd.lm.models import HFLanguageModel, suppress_tokens
from alignkd.lm.ppo import PPOConfig, ValueHead, gae, policy_logprobs_and_values, shaped_rewards, train_ppo
from alignkd.lm.generation import token_logprobs
from alignkd.lm.reward import RewardOracle
from alignkd.lm.students import tiny_llama

V = 16


def as_policy(model):
    return HFLanguageModel(model, None, [0], eos_id=1, pad_id=2)


def fives_logprob(tokens, mask):
    """Toy p_target: log-prob −0.1 for token 5, −3 otherwise, so the reward grows with the share of 5s."""
    return (torch.where(tokens == 5, -0.1, -3.0) * mask).sum(1) / mask.sum(1)


def toy_run(seed=0, **overrides):
    settings = dict(n_iterations=16, batch_size=32, mini_batch_size=8, learning_rate=3e-3, beta=0.05,
                    max_new_tokens=12, eval_every=4, device="cpu")
    config = PPOConfig(**{**settings, **overrides})
    policy, reference = tiny_llama(V, seed=1), tiny_llama(V, seed=1)
    return train_ppo(as_policy(policy), as_policy(reference), RewardOracle(fives_logprob), config, seed=seed,
                     progress=False), policy


def test_gae_by_hand():
    # one prompt position (masked), three response tokens, one padding position
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    rewards = torch.tensor([[9.0, 0.0, 0.0, 1.0, 9.0]])
    values = torch.tensor([[9.0, 0.5, 0.6, 0.7, 9.0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # δ = [0.6−0.5, 0.7−0.6, 1−0.7] = [0.1, 0.1, 0.3]; A_t = δ_t + 0.5·A_{t+1}
    torch.testing.assert_close(advantages, torch.tensor([[0.0, 0.225, 0.25, 0.3, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.0, 0.725, 0.85, 1.0, 0.0]]))
    # λ = γ = 1: Monte-Carlo return minus the value
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]]))


def test_shaped_rewards_put_the_kl_on_every_token_and_the_score_on_the_last():
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    logprob = torch.tensor([[0.0, -1.0, -2.0, 0.0], [0.0, -1.0, -1.0, -1.0]])
    ref_logprob = torch.tensor([[0.0, -2.0, -1.0, 0.0], [0.0, -1.5, -1.0, -3.0]])
    score = torch.tensor([4.0, 6.0])
    rewards = shaped_rewards(score, logprob, ref_logprob, mask, beta=0.5, kl_form="reward")
    torch.testing.assert_close(rewards, torch.tensor([[0.0, -0.5, 0.5 + 4.0, 0.0], [0.0, -0.25, 0.0, -1.0 + 6.0]]))
    rewards = shaped_rewards(score, logprob, ref_logprob, mask, beta=0.5, kl_form="k3")
    torch.testing.assert_close(rewards, torch.tensor([[0.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 6.0]]))


def test_zero_initialised_value_head():
    model = tiny_llama(V, seed=0)
    tokens = torch.tensor([[0, 5, 6, 7]])
    logprob, values = policy_logprobs_and_values(model, ValueHead(model.config.hidden_size), tokens, torch.ones_like(tokens))
    assert logprob.shape == values.shape == (1, 3) and torch.all(values == 0)


def test_policy_scores_match_token_logprobs_with_suppressed_tokens():
    model = tiny_llama(V, seed=0)
    tokens = torch.tensor([[0, 5, 6, 1, 2], [0, 7, 8, 9, 1]])  # the first row is padded with 2
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool()
    head = ValueHead(model.config.hidden_size)
    with torch.no_grad():
        logits = model(input_ids=tokens).logits[:, :-1].float()
        logits[..., [0, 2, 3]] = -torch.inf  # the language without <bos>, <pad>, <unk>, by hand
        by_hand = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None])[..., 0]
        by_hand = torch.where(mask[:, 1:], by_hand, torch.zeros(()))
        suppress_tokens(model, [0, 2, 3])
        logprob, _ = policy_logprobs_and_values(model, head, tokens, mask)
        torch.testing.assert_close(logprob, by_hand)
        torch.testing.assert_close(logprob, token_logprobs(model, tokens, mask))
    assert torch.isfinite(logprob).all() and logprob[0, -1] == 0.0  # padding (a suppressed id) scores 0, not −inf


def test_short_run_raises_reward_and_is_reproducible():
    run, policy = toy_run()
    trajectory = run.trajectory
    assert list(trajectory.iteration) == [0, 4, 8, 12, 16]
    assert trajectory.reward_mean.iloc[-1] > trajectory.reward_mean.iloc[0] + 1.0
    assert trajectory.kl.iloc[0] == 0.0 and trajectory.kl.iloc[-1] > 0.0  # the policy starts at the reference
    assert run.selected_step in set(trajectory.iteration)
    assert all(torch.equal(a, b) for a, b in zip(run.checkpoints[16].values(), policy.state_dict().values()))
    # same seed → identical numbers; a shorter run is exactly the first part of a longer one
    prefix, _ = toy_run(n_iterations=4)
    assert prefix.trajectory.equals(trajectory.iloc[:2])
    other_seed, _ = toy_run(seed=1, n_iterations=4)
    assert not other_seed.trajectory.equals(trajectory.iloc[:2])


def test_k3_form_also_raises_reward_and_on_eval_replaces_checkpoints():
    calls = []
    settings = dict(n_iterations=16, batch_size=32, mini_batch_size=8, learning_rate=3e-3, beta=0.05,
                    max_new_tokens=12, eval_every=8, device="cpu", kl_form="k3")
    # <bos>, <pad>, <unk> are not words: suppressed, as in the markov_mixture runs
    policy, reference = (HFLanguageModel(tiny_llama(V, seed=1), None, [0], eos_id=1, pad_id=2, suppress_ids=[0, 2, 3])
                         for _ in range(2))
    run = train_ppo(policy, reference, RewardOracle(fives_logprob), PPOConfig(**settings), seed=0,
                    progress=False, on_eval=lambda step, model: calls.append(step) or f"metrics@{step}")
    assert calls == [0, 8, 16] and run.checkpoints == {s: f"metrics@{s}" for s in calls}
    assert run.trajectory.notna().all().all()
    assert run.trajectory.reward_mean.iloc[-1] > run.trajectory.reward_mean.iloc[0] + 1.0


@pytest.mark.parametrize("field, value, message", [
    ("device", "cuda", "device"),
    ("device", "tpu", "device"),
    ("mini_batch_size", 7, "mini_batch_size"),
    ("kl_form", "forward", "kl_form"),
    ("beta", 0.0, "beta"),
])
def test_bad_config_fails_on_construction_naming_the_field(field, value, message):
    if torch.cuda.is_available() and field in ("bf16", "device") and value != "tpu":
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match=message):
        PPOConfig(**{field: value})
