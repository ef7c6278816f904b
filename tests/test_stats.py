"""Paired bootstrap intervals and the Brown–Forsythe test (alignkd.stats) on synthetic data with known answers."""

import numpy as np
import pandas as pd
import pytest

from alignkd.stats import brown_forsythe, compare_paired, mean_verdict, paired_bootstrap, spread_verdict


def test_paired_bootstrap_covers_a_known_difference():
    # a − b = 0.5 + noise whose trial effect (sd 2) cancels in the pairing: the interval is narrow and covers 0.5
    rng = np.random.default_rng(0)
    trial = rng.normal(0, 2, 200)
    a, b = trial + 0.5 + rng.normal(0, 0.3, 200), trial + rng.normal(0, 0.3, 200)
    estimate, low, high = paired_bootstrap(a, b)
    assert estimate == pytest.approx(np.mean(a - b))
    assert low < 0.5 < high
    assert high - low < 0.2  # unpaired, the trial effect would make it ~1.1 wide
    assert mean_verdict(low, high) == "holds"


def test_paired_bootstrap_coverage_over_repeated_experiments():
    # the 95 % interval covers the true difference in about 95 % of 200 synthetic experiments of 30 pairs
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(200):
        b = rng.normal(0, 1, 30)
        a = b + 0.3 + rng.normal(0, 1, 30)
        _, low, high = paired_bootstrap(a, b, n_resamples=999, seed=i)
        hits += low < 0.3 < high
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_bootstrap_edge_cases():
    assert paired_bootstrap([1.0, 2.0, 3.0], [0.0, 1.0, 2.0]) == (1.0, 1.0, 1.0)  # constant differences
    assert np.isnan(paired_bootstrap([1.0], [0.0]).low)
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_brown_forsythe_finds_the_steadier_sample():
    rng = np.random.default_rng(2)
    steady, wild = rng.normal(0, 1, 100), rng.normal(0, 3, 100)
    test = brown_forsythe(steady, wild)
    assert test.sd_a < test.sd_b and test.p_value < 1e-6
    assert spread_verdict(test) == "holds"
    assert spread_verdict(brown_forsythe(wild, steady)) == "does not hold"
    same = brown_forsythe(rng.normal(0, 1, 50), rng.normal(5, 1, 50))  # different means, same spread
    assert spread_verdict(same) == "partly"


def test_compare_paired_pairs_by_trial_and_drops_unpaired():
    frame = pd.DataFrame({"setting": ["s"] * 7, "pipeline": ["A-K"] * 4 + ["K-A"] * 3,
                          "trial": [0, 1, 2, 3, 2, 0, 1], "reward": [8.0, 9.0, 10.0, 99.0, 7.0, 2.0, 6.0]})
    line = compare_paired(frame, ["setting"], "reward").iloc[0]
    assert line.n == 3  # trial 3 has no K-A partner
    assert line["diff"] == pytest.approx(((8 - 2) + (9 - 6) + (10 - 7)) / 3)
    assert line.sd_a == pytest.approx(1.0) and line.sd_b == pytest.approx(np.std([2, 6, 7], ddof=1))
    assert line.ci_low <= line["diff"] <= line.ci_high


def test_paired_on_index_pairs_only_labels_present_in_both():
    import pandas as pd

    from alignkd.stats import paired_on_index

    a = pd.Series({0: 2.0, 1: 3.0, 2: 5.0, 7: 100.0})  # label 7 has no partner
    b = pd.Series({0: 1.0, 1: 1.0, 2: 2.0, 3: -50.0})  # nor label 3
    interval, n_pairs = paired_on_index(a, b)
    assert n_pairs == 3 and interval.estimate == pytest.approx(2.0)  # differences 1, 2, 3
    assert 1.0 <= interval.low <= interval.estimate <= interval.high <= 3.0
