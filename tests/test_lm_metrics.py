"""Metrics of the LLM testbed on exact densities, and the chapter's tables computed from them."""

import math

import pandas as pd
import pytest
import torch

from alignkd.lm.groundtruth import markov_mixture
from alignkd.lm.metrics import MetricConfig, evaluate, per_token_mean, target_share
from alignkd.lm.reward import RewardOracle
from alignkd.lm.summary import final_tau_effects


def test_metrics_of_the_ground_truth_itself_are_exact_and_consistent():
    p_star = markov_mixture(vocab_size=16, n_topics=3, seed=4)
    p_target = p_star.restrict([2])
    recall_samples = p_star.sample(4000, 10, seed=1)
    oracle = RewardOracle.from_language_model(p_target, p_target.sample(2000, 10, seed=2))
    config = MetricConfig(n_samples=4000, max_new_tokens=10, seed=3)
    row = evaluate(p_star, p_star=p_star, p_target=p_target, recall_samples=recall_samples, config=config,
                   oracle=oracle, target_topic=2)
    # for q = p*, precision and recall estimate the same number E_p*[log p*(x)/|x|]
    assert row["overall_precision"] == pytest.approx(row["overall_recall"], abs=0.05)
    # the same samples scored by hand
    q = p_star.sample(4000, 10, 1.0, seed=3)
    per_token = p_star.log_prob(q).total / q.response_lengths
    assert row["overall_precision"] == pytest.approx(float(per_token.double().mean()), abs=1e-6)
    nll = -p_target.log_prob(q).per_token.double()
    base = 10 * torch.exp(-0.5 * nll)
    folded = torch.where(base <= oracle.fold_threshold, base, 2 * oracle.fold_threshold - base)
    assert row["reward"] == pytest.approx(float(folded.mean()), abs=1e-5)
    assert row["target_precision"] == pytest.approx(float(-nll.mean()), abs=1e-6)
    # the target topic's share of p*'s samples is its weight
    assert row["target_share"] == pytest.approx(float(p_star.weights[2]), abs=0.03)
    # p_target itself writes (almost) only the target topic and has the higher target precision
    own = evaluate(p_target, p_star=p_star, p_target=p_target, recall_samples=recall_samples, config=config,
                   oracle=oracle, target_topic=2)
    assert own["target_share"] > 0.9 and own["target_precision"] > row["target_precision"]
    assert own["overall_recall"] < row["overall_recall"]  # it misses the other topics: low recall
    # τ_f is the 90th percentile of R_base over p_target's own samples (App. C.3)
    assert 0 < oracle.fold_threshold <= 10


def test_per_token_mean_and_target_share_by_hand():
    p_star = markov_mixture(vocab_size=10, n_topics=2, seed=0)
    s = p_star.sample(50, 6, seed=0)
    totals = p_star.log_prob(s).total.double()
    assert per_token_mean(p_star, s) == pytest.approx(float((totals / s.response_lengths).mean()), abs=1e-6)
    posterior = p_star.topic_posterior(s)
    assert target_share(p_star, s, 1) == pytest.approx(float((posterior[:, 1] > posterior[:, 0]).double().mean()))
    assert math.isfinite(per_token_mean(p_star, s))


def test_final_tau_effects_against_hand_computed_differences():
    rows = [  # A-K's final model at three τ, two seeds; other models must be ignored
        ("ppo", "p''_AK", 0.95, -2.0, -4.0), ("ppo", "p''_AK", 0.95, -2.2, -4.2),
        ("ppo", "p''_AK", 0.925, -1.8, -4.3), ("ppo", "p''_AK", 0.925, -2.0, -4.5),   # +0.2 precision, −0.3 recall
        ("ppo", "p''_AK", 0.975, -2.0, -4.0), ("ppo", "p''_AK", 0.975, -2.0, -4.0),   # +0.1 precision, +0.1 recall
        ("ppo", "p''_KA", float("nan"), 9.0, 9.0),
    ]
    metrics = pd.DataFrame(rows, columns=["algorithm", "model", "final_tau", "overall_precision", "overall_recall"])
    table = final_tau_effects(metrics, 0.95).set_index("final_tau")
    assert list(table.index) == [0.925, 0.975]
    assert table.loc[0.925, "d_precision"] == pytest.approx(0.2) and table.loc[0.925, "d_recall"] == pytest.approx(-0.3)
    assert table.loc[0.925, "precision_std"] == pytest.approx(2 ** 0.5 * 0.1)
    assert table.loc[0.925, "paper_direction"]  # lower τ: more precision, less recall
    assert table.loc[0.975, "d_precision"] == pytest.approx(0.1) and not table.loc[0.975, "paper_direction"]
