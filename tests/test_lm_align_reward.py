"""The reward oracle of App. C.3: eq. 9, the folding of eq. 10, τ_f as a percentile, NLL labelling."""

import math

import numpy as np
import pytest
import torch

from alignkd.lm.generation import Samples, sequence_logprobs
from alignkd.lm.reward import (PAPER_FOLD_THRESHOLD, RewardOracle, _real_mask_and_prompt_length, fold,
                               fold_threshold, pair_preferences, scorer_from_language_model)
from alignkd.lm.students import tiny_llama

PAD = 2


def unigram_logprob(tokens, mask):
    """Toy p_target: token 5 has log-prob −0.1, every other token −3 (per-token average over mask)."""
    per_token = torch.where(tokens == 5, -0.1, -3.0)
    return (per_token * mask).sum(1) / mask.sum(1)


def hand_samples():
    # prompt [0], responses: "5 5 eos" | "7 eos pad" | "5 7 7"  (eos = 1, pad = 2)
    tokens = torch.tensor([[0, 5, 5, 1], [0, 7, 1, PAD], [0, 5, 7, 7]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    return Samples(tokens, mask, prompt_length=1)


def test_nll_is_the_per_token_average_over_response_tokens_only():
    nll = RewardOracle(unigram_logprob).nll(hand_samples())
    # prompt token 0 is not scored, EOS is, padding is not
    expected = torch.tensor([(0.1 + 0.1 + 3.0) / 3, (3.0 + 3.0) / 2, (0.1 + 3.0 + 3.0) / 3])
    torch.testing.assert_close(nll, expected)


def test_base_and_folded_reward_match_eqs_9_and_10():
    samples = hand_samples()
    nll = torch.tensor([3.2 / 3, 3.0, 6.1 / 3])
    base = 10.0 * torch.exp(-0.5 * nll)  # eq. 9
    threshold = 5.0  # base = [5.87, 2.23, 3.62]: only the first is folded
    oracle = RewardOracle(unigram_logprob, fold_threshold=threshold)
    torch.testing.assert_close(oracle.base_reward(samples), base)
    folded = torch.where(base <= threshold, base, 2 * threshold - base)  # eq. 10
    torch.testing.assert_close(oracle.reward(samples), folded)
    assert float(base[0]) > threshold and float(oracle.reward(samples)[0]) == pytest.approx(10 - float(base[0]))
    # no threshold: no folding
    torch.testing.assert_close(RewardOracle(unigram_logprob).reward(samples), base)


def test_fold_by_hand():
    torch.testing.assert_close(fold(torch.tensor([5.0, 8.0, 9.5, 10.0]), 8.0), torch.tensor([5.0, 8.0, 6.5, 6.0]))


def test_paper_threshold_is_a_per_token_nll_of_a_third_of_a_nat():
    # R_base = τ_f ⇔ NLL = −2 ln(τ_f / 10): 0.334 nats: plausible per token, impossible as a sum over 128 tokens
    assert -2 * math.log(PAPER_FOLD_THRESHOLD / 10) == pytest.approx(0.3336, abs=1e-4)


def test_threshold_is_the_90th_percentile():
    assert fold_threshold(torch.arange(11.0)) == pytest.approx(9.0)
    values = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 10
    assert fold_threshold(values) == pytest.approx(float(np.percentile(values.numpy(), 90)), rel=1e-6)
    assert fold_threshold(values, 0.5) == pytest.approx(float(np.percentile(values.numpy(), 50)), rel=1e-6)


def test_oracle_threshold_from_p_target_samples():
    samples = hand_samples()
    oracle = RewardOracle.from_target_samples(unigram_logprob, samples)
    base = RewardOracle(unigram_logprob).base_reward(samples)
    assert oracle.fold_threshold == pytest.approx(float(np.percentile(base.numpy(), 90)), rel=1e-6)
    # only the top decile is folded: rewards above τ_f reflect below it
    assert float(oracle.reward(samples).max()) <= oracle.fold_threshold + 1e-6


def test_preferences_follow_lower_nll_and_ties_are_flagged():
    oracle = RewardOracle(unigram_logprob)
    samples = hand_samples()
    a, b = samples[[0, 1, 2]], samples[[1, 2, 2]]
    assert oracle.prefer(a, b).tolist() == [True, False, False]  # NLL 1.07 < 3.0, 3.0 > 2.03, tie
    chosen, tie = pair_preferences(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 1.0, 3.0]))
    assert chosen.tolist() == [True, False, False] and tie.tolist() == [False, False, True]


def test_language_model_scorer_recovers_mask_and_prompt():
    tokens = torch.tensor([[0, 4, 5, 1, PAD], [0, 4, 6, 7, 1]])
    samples = Samples(tokens, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool(), prompt_length=2)
    real, prompt_length = _real_mask_and_prompt_length(samples.response_mask)
    assert prompt_length == 2 and torch.equal(real, samples.mask)

    class Seen:  # records what the language model was asked to score
        def log_prob(self, s):
            self.samples = s
            return sequence_logprobs(tiny_llama(12, seed=0), s)

    lm = Seen()
    scorer_from_language_model(lm)(samples.tokens, samples.response_mask)
    assert lm.samples.prompt_length == 2 and torch.equal(lm.samples.mask, samples.mask)


def test_bad_oracle_settings_fail_with_the_field_name():
    with pytest.raises(ValueError, match="fold_threshold"):
        RewardOracle(unigram_logprob, fold_threshold=11.0)
    with pytest.raises(ValueError, match="quantile"):
        fold_threshold(torch.arange(3.0), 1.5)
    with pytest.raises(ValueError, match="one value per sequence"):
        RewardOracle(lambda t, m: torch.zeros(2)).nll(hand_samples())
