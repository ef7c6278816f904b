"""Reward gaps at matched response length: hand-computed strata."""

import math

import pandas as pd
import pytest
import torch

from alignkd.lm.generation import Samples
from alignkd.lm.length import length_matched_gap, reward_samples


def frame(pairs):
    return pd.DataFrame(pairs, columns=["length", "reward"])


def test_a_gap_that_is_only_length_vanishes_at_matched_length():
    # reward depends on length only (1 per token), a is shorter: raw gap −2, none at matched length
    a = frame([(2, 2.0)] * 30 + [(4, 4.0)] * 10)
    b = frame([(2, 2.0)] * 10 + [(4, 4.0)] * 30)
    gap = length_matched_gap(a, b, min_count=5)
    assert gap.raw == pytest.approx(2.5 - 3.5) and gap.matched == 0.0
    assert gap.mean_length_a == 2.5 and gap.mean_length_b == 3.5 and gap.coverage_a == gap.coverage_b == 1.0


def test_matched_gap_weights_shared_lengths_by_pooled_counts_and_drops_thin_ones():
    a = frame([(2, 1.0)] * 10 + [(3, 3.0)] * 30 + [(9, 100.0)] * 2)
    b = frame([(2, 0.0)] * 30 + [(3, 2.0)] * 10)
    gap = length_matched_gap(a, b, min_count=5)  # length 9: a only, dropped
    assert gap.matched == pytest.approx((1.0 * 40 + 1.0 * 40) / 80)
    assert gap.coverage_a == pytest.approx(40 / 42) and gap.coverage_b == 1.0
    assert "+1.000 at matched length" in gap.describe("A-K", "K-A")
    assert math.isnan(length_matched_gap(a, b, min_count=50).matched)  # no length both produce 50 times
    with pytest.raises(ValueError, match="min_count"):
        length_matched_gap(a, b, min_count=0)


def test_reward_samples_reports_each_samples_length_and_reward():
    class Fixed:  # a model whose samples are given, and an oracle rewarding length
        def sample(self, n, max_new_tokens, temperature, *, seed):
            tokens = torch.tensor([[0, 5, 1, 2], [0, 5, 6, 1]])
            return Samples(tokens, tokens != 2, 1)

    class Oracle:
        def reward(self, samples):
            return samples.response_lengths.float() * 0.5

    table = reward_samples(Fixed(), Oracle(), 2, 3, seed=0)
    assert table["length"].tolist() == [2, 3] and table["reward"].tolist() == [1.0, 1.5]
