"""On-policy DPO (App. C.3): response log-probs and a short run (the loss of eq. 2: test_objectives.py)."""

import pytest
import torch

from alignkd.lm.dpo import DPOConfig, response_logprobs, train_dpo
from alignkd.lm.generation import Samples, sequence_logprobs
from alignkd.lm.models import HFLanguageModel
from alignkd.lm.reward import RewardOracle
from alignkd.lm.students import tiny_llama

V = 16


def fives_logprob(tokens, mask):
    return (torch.where(tokens == 5, -0.1, -3.0) * mask).sum(1) / mask.sum(1)


def test_response_logprobs_mask_the_prompt():
    model = tiny_llama(V, seed=2)
    samples = Samples(torch.tensor([[0, 4, 5, 6, 1], [0, 4, 7, 1, 2]]),
                      torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]).bool(), prompt_length=2)
    with torch.no_grad():
        ours = response_logprobs(model, samples.tokens, samples.mask, samples.response_mask[:, 1:].float())
    torch.testing.assert_close(ours, sequence_logprobs(model, samples).total)


def toy_run(seed=0, **overrides):
    settings = dict(n_iterations=12, batch_size=32, grad_steps=4, pairs_per_step=8, learning_rate=3e-3, beta=0.1,
                    max_new_tokens=12, eval_every=4, device="cpu")
    policy, reference = (HFLanguageModel(tiny_llama(V, seed=1), None, [0], eos_id=1, pad_id=2) for _ in range(2))
    run = train_dpo(policy, reference, RewardOracle(fives_logprob), DPOConfig(**{**settings, **overrides}),
                    seed=seed, progress=False)
    return run


def test_short_run_raises_reward_selects_peak_margin_and_is_reproducible():
    run = toy_run()
    trajectory = run.trajectory
    assert list(trajectory.iteration) == [0, 4, 8, 12]
    assert trajectory.reward_mean.iloc[-1] > trajectory.reward_mean.iloc[0] + 1.0
    first = trajectory.iloc[0]  # the policy is the reference: implicit rewards are 0, accuracy 0 (ties)
    assert first.chosen_reward == first.rejected_reward == first.margin == first.accuracy == 0.0
    assert first.chosen_oracle_reward > first.rejected_oracle_reward  # labels follow the oracle
    assert trajectory.margin.iloc[-1] > 0 and trajectory.accuracy.iloc[-1] > 0.5
    assert run.selected_step == int(trajectory.iteration[trajectory.margin.idxmax()])
    prefix = toy_run(n_iterations=4)
    assert prefix.trajectory.equals(trajectory.iloc[:2])


@pytest.mark.parametrize("field, value, message", [
    ("pairs_per_step", 65, "pairs_per_step"),
    ("beta", -1.0, "beta"),
    ("grad_steps", 0, "grad_steps"),
])
def test_bad_config_fails_on_construction_naming_the_field(field, value, message):
    if torch.cuda.is_available() and field == "bf16":
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match=message):
        DPOConfig(**{field: value})
