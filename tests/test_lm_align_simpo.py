"""On-policy SimPO (SPEC §8): length-normalised log-probs, a short run on the synthetic language, and that
no update depends on the reference (the loss: test_objectives.py)."""

import pytest
import torch

from alignkd.lm.generation import Samples, sequence_logprobs
from alignkd.lm.groundtruth import markov_mixture
from alignkd.lm.reward import RewardOracle
from alignkd.lm.simpo import SimPOConfig, response_average_logprobs, train_simpo
from alignkd.lm.students import tiny_llama

COLUMNS = {"iteration", "reward_mean", "reward_std", "nll_mean", "kl", "chosen_reward", "rejected_reward", "margin",
           "accuracy", "chosen_oracle_reward", "rejected_oracle_reward", "n_pairs"}
LANGUAGE = markov_mixture(vocab_size=12, n_topics=3)


def test_average_logprobs_are_the_papers_per_token_metric():
    model = tiny_llama(12, seed=2)
    samples = Samples(torch.tensor([[0, 4, 5, 6, 1], [0, 4, 7, 1, 2]]),
                      torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]).bool(), prompt_length=2)
    with torch.no_grad():
        ours = response_average_logprobs(model, samples.tokens, samples.mask, samples.response_mask[:, 1:].float())
    torch.testing.assert_close(ours, sequence_logprobs(model, samples).per_token)


def toy_run(seed=0, reference_model=None, **overrides):
    """Align a tiny Llama towards the rarest topic of a 3-topic language (p_target = that topic's chain)."""
    settings = dict(n_iterations=16, batch_size=32, grad_steps=4, pairs_per_step=8, learning_rate=3e-3,
                    max_new_tokens=8, eval_every=8, device="cpu")
    oracle = RewardOracle.from_language_model(LANGUAGE.restrict([2]))
    policy = LANGUAGE.wrap(tiny_llama(LANGUAGE.vocab_size, seed=1))
    reference = LANGUAGE.wrap(reference_model or tiny_llama(LANGUAGE.vocab_size, seed=1))
    return train_simpo(policy, reference, oracle, SimPOConfig(**{**settings, **overrides}), seed=seed, progress=False)


def test_short_run_raises_reward_logs_cpo_series_and_is_reproducible():
    run = toy_run()
    trajectory = run.trajectory
    assert set(trajectory.columns) == COLUMNS and list(trajectory.iteration) == [0, 8, 16]
    assert trajectory.reward_mean.iloc[-1] > trajectory.reward_mean.iloc[0] + 1.0
    first = trajectory.iloc[0]
    assert first.kl == 0.0  # the policy starts as the reference
    assert first.chosen_reward < 0 and first.rejected_reward < 0  # β·(average log-likelihood): no reference offset
    assert first.chosen_oracle_reward > first.rejected_oracle_reward  # labels follow the oracle
    assert trajectory.margin.iloc[-1] > trajectory.margin.iloc[0] and trajectory.accuracy.iloc[-1] > 0.5
    assert trajectory.kl.iloc[-1] > 0  # measured against the reference, though the loss never saw it
    assert run.selected_step == int(trajectory.iteration[trajectory.margin.idxmax()])
    prefix = toy_run(n_iterations=8)
    assert prefix.trajectory.equals(trajectory.iloc[:2])


def test_updates_do_not_depend_on_the_reference():
    same = toy_run(n_iterations=4, eval_every=2)
    other = toy_run(n_iterations=4, eval_every=2, reference_model=tiny_llama(LANGUAGE.vocab_size, hidden=16, seed=9))
    for step in (2, 4):
        for name, tensor in same.checkpoints[step].items():
            assert torch.equal(tensor, other.checkpoints[step][name]), (step, name)
    rest = sorted(set(same.trajectory.columns) - {"kl"})  # only the measured KL may differ
    assert same.trajectory[rest].equals(other.trajectory[rest])
    assert not same.trajectory.kl.equals(other.trajectory.kl)


@pytest.mark.parametrize("field, value, message", [
    ("pairs_per_step", 65, "pairs_per_step"),
    ("batch_size", 7, "batch_size"),
    ("beta", 0.0, "beta"),
    ("gamma", -0.5, "gamma"),
    ("grad_steps", 0, "grad_steps"),
])
def test_bad_config_fails_on_construction_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SimPOConfig(**{field: value})
