"""Metrics of the LLM testbed on exact densities, and a tiny end-to-end pipeline with its cache."""

import math

import pandas as pd
import pytest
import torch

from alignkd.cache import ResultStore
from alignkd.lm.groundtruth import MarkovMixtureConfig, markov_mixture
from alignkd.lm.kd import KDDataConfig, TrainConfig
from alignkd.lm.metrics import MetricConfig, evaluate, per_token_mean, target_mass
from alignkd.lm.pipeline import (LLMConfig, StageConfig, alignment_config, final_tau_effects, prepare, run_pipelines,
                                 summarise)
from alignkd.lm.reward import RewardOracle


def test_metrics_of_the_ground_truth_itself_are_exact_and_consistent():
    p_star = markov_mixture(vocab_size=16, n_topics=3, seed=4)
    p_target = p_star.restrict([2])
    recall_samples = p_star.sample(4000, 10, seed=1)
    oracle = RewardOracle.from_language_model(p_target, p_target.sample(2000, 10, seed=2))
    config = MetricConfig(n_samples=4000, max_new_tokens=10, seed=3)
    row = evaluate(p_star, p_star=p_star, p_target=p_target, recall_samples=recall_samples, config=config,
                   oracle=oracle, target_topic=2)
    # for q = p*, precision and recall estimate the same number E_p*[log p*(x)/|x|]
    assert row["precision"] == pytest.approx(row["recall"], abs=0.05)
    # the same samples scored by hand
    q = p_star.sample(4000, 10, 1.0, seed=3)
    per_token = p_star.log_prob(q).total / q.response_lengths
    assert row["precision"] == pytest.approx(float(per_token.double().mean()), abs=1e-6)
    nll = -p_target.log_prob(q).per_token.double()
    base = 10 * torch.exp(-0.5 * nll)
    folded = torch.where(base <= oracle.fold_threshold, base, 2 * oracle.fold_threshold - base)
    assert row["reward"] == pytest.approx(float(folded.mean()), abs=1e-5)
    assert row["target_precision"] == pytest.approx(float(-nll.mean()), abs=1e-6)
    # the target topic's share of p*'s samples is its weight
    assert row["target_mass"] == pytest.approx(float(p_star.weights[2]), abs=0.03)
    # p_target itself writes (almost) only the target topic and has the higher target precision
    own = evaluate(p_target, p_star=p_star, p_target=p_target, recall_samples=recall_samples, config=config,
                   oracle=oracle, target_topic=2)
    assert own["target_mass"] > 0.9 and own["target_precision"] > row["target_precision"]
    assert own["recall"] < row["recall"]  # it misses the other topics: low recall
    # τ_f is the 90th percentile of R_base over p_target's own samples (App. C.3)
    assert 0 < oracle.fold_threshold <= 10


def test_per_token_mean_and_target_mass_by_hand():
    p_star = markov_mixture(vocab_size=10, n_topics=2, seed=0)
    s = p_star.sample(50, 6, seed=0)
    totals = p_star.log_prob(s).total.double()
    assert per_token_mean(p_star, s) == pytest.approx(float((totals / s.response_lengths).mean()), abs=1e-6)
    posterior = p_star.topic_posterior(s)
    assert target_mass(p_star, s, 1) == pytest.approx(float((posterior[:, 1] > posterior[:, 0]).double().mean()))
    assert math.isfinite(per_token_mean(p_star, s))


def test_tiny_pipeline_runs_and_a_rerun_is_read_from_the_cache(tmp_path):
    torch.set_num_threads(1)
    train = TrainConfig(size="tiny", learning_rate=5e-3, batch_size=32)
    config = LLMConfig(markov=MarkovMixtureConfig(vocab_size=12, n_topics=3),
                       high_recall=StageConfig(KDDataConfig(n_samples=300, max_new_tokens=6), train),
                       low_recall=StageConfig(KDDataConfig(n_samples=200, max_new_tokens=6, tau=0.95, tau_topic=0.7), train),
                       n_fold_samples=100, n_recall_samples=100, metrics=MetricConfig(n_samples=100, max_new_tokens=6))
    store = ResultStore("test", root=tmp_path)
    ppo = alignment_config("ppo", n_iterations=2, batch_size=8, mini_batch_size=4, learning_rate=1e-3,
                           max_new_tokens=6, eval_every=1, device="cpu")
    setup = prepare(config, store, progress=False)
    metrics, trajectories = run_pipelines(setup, "ppo", ppo, [0], progress=False)
    assert list(metrics["model"]) == ["p*", "p'", "p''", "p_target", "p''_KA", "p'_AK", "p''_AK"]
    assert metrics[["precision", "recall", "target_precision", "reward"]].notna().all().all()
    assert set(trajectories["pipeline"]) == {"K-A", "A-K"} and (trajectories["iteration"].max() == 2)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    again, _ = run_pipelines(prepare(config, store, progress=False), "ppo", ppo, [0], progress=False)
    pd.testing.assert_frame_equal(metrics, again)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing recomputed, nothing written
    table = summarise(metrics)
    assert set(table["model"]) == set(metrics["model"])
    # App. D: a second final-KD temperature reuses the aligned models and adds one p''_AK row per τ
    swept, _ = run_pipelines(setup, "ppo", ppo, [0], final_taus=[0.95, 0.8], progress=False)
    finals = swept[swept["model"] == "p''_AK"].set_index("final_tau")
    assert list(finals.index) == [0.95, 0.8]
    first = metrics[metrics["model"] == "p''_AK"].iloc[0]
    assert (finals.loc[0.95, "precision"], finals.loc[0.95, "recall"]) == (first["precision"], first["recall"])
    assert finals.loc[0.8, "precision"] != finals.loc[0.95, "precision"]
    with pytest.raises(ValueError, match="final_taus"):
        run_pipelines(setup, "ppo", ppo, [0], final_taus=[], progress=False)
    with pytest.raises(ValueError, match="allowed: ppo, dpo, grpo"):
        alignment_config("sft")
    with pytest.raises(ValueError, match="tau_topic"):
        LLMConfig(ground_truth="gguf:smollm2")  # the default p'' stage sharpens topics: synthetic language only


def test_final_tau_effects_against_hand_computed_differences():
    rows = [  # A-K's final model at three τ, two seeds; other models must be ignored
        ("ppo", "p''_AK", 0.95, -2.0, -4.0), ("ppo", "p''_AK", 0.95, -2.2, -4.2),
        ("ppo", "p''_AK", 0.925, -1.8, -4.3), ("ppo", "p''_AK", 0.925, -2.0, -4.5),   # +0.2 precision, −0.3 recall
        ("ppo", "p''_AK", 0.975, -2.0, -4.0), ("ppo", "p''_AK", 0.975, -2.0, -4.0),   # +0.1 precision, +0.1 recall
        ("ppo", "p''_KA", float("nan"), 9.0, 9.0),
    ]
    metrics = pd.DataFrame(rows, columns=["algorithm", "model", "final_tau", "precision", "recall"])
    table = final_tau_effects(metrics, 0.95).set_index("final_tau")
    assert list(table.index) == [0.925, 0.975]
    assert table.loc[0.925, "d_precision"] == pytest.approx(0.2) and table.loc[0.925, "d_recall"] == pytest.approx(-0.3)
    assert table.loc[0.925, "precision_std"] == pytest.approx(2 ** 0.5 * 0.1)
    assert table.loc[0.925, "paper_direction"]  # lower τ: more precision, less recall
    assert table.loc[0.975, "d_precision"] == pytest.approx(0.1) and not table.loc[0.975, "paper_direction"]
