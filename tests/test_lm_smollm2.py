"""Chapter 06's SmolLM2 section: its recall baselines (a unigram of the KD data, a uniform guess) by hand, and
its study end to end on a tiny synthetic stand-in for SmolLM2 (the same code path, no GGUF file needed)."""

import math

import pandas as pd
import pytest
import torch

from alignkd.cache import ResultStore
from alignkd.lm.config import LLMConfig, StageConfig
from alignkd.lm.experiments import GroundTruth, cached_kd_data, distilled
from alignkd.lm.generation import Samples
from alignkd.lm.groundtruth import MarkovMixtureConfig, markov_mixture
from alignkd.lm.kd import KDDataConfig, TrainConfig, load_dataset
from alignkd.lm.metrics import (MetricConfig, UnigramModel, leave_one_out_alpha, leave_one_out_loglik, per_token_mean,
                                token_counts, uniform_recall)
from alignkd.lm.smollm2 import COLUMNS, cached_recall_study, recall_split


def _samples(rows: list[list[int]], pad: int = 2) -> Samples:
    """<bos> + each row, right-padded."""
    width = 1 + max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, :1 + len(r)] = torch.tensor([0, *r])
        mask[i, :1 + len(r)] = True
    return Samples(tokens, mask, 1)


def test_unigram_scores_responses_with_add_alpha_frequencies_by_hand():
    p_star = markov_mixture(vocab_size=8, n_topics=2, seed=0)  # words 4..7, EOS 1; <bos>, <pad>, <unk> suppressed
    data = _samples([[4, 4, 5, 1], [4, 6, 1]])  # response counts: 4 ×3, 5 ×1, 6 ×1, EOS ×2; N = 7, S = 5 tokens
    assert token_counts(data, 8).tolist() == [0, 2, 0, 0, 3, 1, 1, 0]
    unigram = UnigramModel.fit(data, p_star, alpha=1.0)
    u = {1: 3 / 12, 4: 4 / 12, 5: 2 / 12, 6: 2 / 12, 7: 1 / 12}
    assert unigram.log_probs.exp()[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]  # the suppressed ids
    for token, p in u.items():
        assert float(unigram.log_probs[token].exp()) == pytest.approx(p)
    scored = _samples([[7, 4, 1], [5]])
    scores = unigram.log_prob(scored)
    by_hand = [math.log(u[7]) + math.log(u[4]) + math.log(u[1]), math.log(u[5])]
    assert scores.total.tolist() == pytest.approx(by_hand, rel=1e-6)
    assert scores.n_tokens.tolist() == [3, 1]
    assert per_token_mean(unigram, scored) == pytest.approx((by_hand[0] / 3 + by_hand[1]) / 2, rel=1e-6)
    # a uniform guess over the same 5 tokens
    assert uniform_recall(p_star) == pytest.approx(-math.log(5))


def test_leave_one_out_is_each_token_scored_by_the_others_and_alpha_is_its_best():
    counts = torch.tensor([5.0, 1.0, 1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    alpha, support = 0.3, 6
    by_hand = 0.0
    for w, c in enumerate(counts.tolist()):
        for _ in range(int(c)):
            others = counts.clone()
            others[w] -= 1
            by_hand += math.log((others[w] + alpha) / (others.sum() + alpha * support))
    assert leave_one_out_loglik(counts, alpha, support) == pytest.approx(by_hand)
    grid = torch.logspace(-3, 1, 41, dtype=torch.float64)
    best = leave_one_out_alpha(counts, support, grid)
    assert all(leave_one_out_loglik(counts, best, support) >= leave_one_out_loglik(counts, float(a), support)
               for a in grid)
    assert 1e-3 < best < 10  # singletons keep α off 0, repeats keep it off the uniform end


def test_unigram_recall_lies_between_uniform_and_the_ground_truth():
    p_star = markov_mixture(vocab_size=16, n_topics=1, concentration=0.05, seed=4)  # one peaked chain: skewed tokens
    data, heldout = p_star.sample(3000, 10, seed=1), p_star.sample(2000, 10, seed=2)
    unigram = UnigramModel.fit(data, p_star)
    assert unigram.alpha > 0
    recall = per_token_mean(unigram, heldout)
    assert uniform_recall(p_star) + 0.1 < recall < per_token_mean(p_star, heldout) - 0.5  # −2.56 < −2.35 < −0.99


def test_unigram_refuses_data_with_suppressed_tokens_and_alpha_zero_with_unseen_tokens():
    p_star = markov_mixture(vocab_size=8, n_topics=2, seed=0)
    with pytest.raises(ValueError, match="suppresses"):
        UnigramModel.fit(_samples([[4, 3, 1]]), p_star)  # <unk> (3)
    with pytest.raises(ValueError, match="alpha = 0"):
        UnigramModel.fit(_samples([[4, 1]]), p_star, alpha=0.0)


def test_recall_split_separates_the_first_token_from_the_later_ones_by_hand():
    p_star = markov_mixture(vocab_size=10, n_topics=2, seed=0)
    samples = p_star.sample(300, 5, seed=3)
    split = recall_split(p_star, samples)
    totals, n = p_star.log_prob(samples).total.double(), samples.response_lengths
    first = torch.stack([torch.logsumexp(p_star.log_weights + p_star.log_init[:, t], 0) for t in samples.tokens[:, 1]])
    assert split["overall_recall"] == pytest.approx(float((totals / n).mean()), abs=1e-6)
    assert split["first_token"] == pytest.approx(float(first.mean()), abs=1e-6)  # log Σ_k w_k π_k(y_1)
    longer = n >= 2
    assert split["later_tokens"] == pytest.approx(float(((totals - first)[longer] / (n[longer] - 1)).mean()), abs=1e-6)


STAND_IN = LLMConfig(  # the section's code path on a synthetic p* (a real LM costs seconds per hundred sequences)
    markov=MarkovMixtureConfig(vocab_size=16, n_topics=1, concentration=0.05),
    high_recall=StageConfig(KDDataConfig(n_samples=400, max_new_tokens=4),
                            TrainConfig(size="tiny", epochs=6, learning_rate=5e-3, batch_size=16)),
    low_recall=StageConfig(KDDataConfig(n_samples=200, max_new_tokens=4, tau=0.95),
                           TrainConfig(size="tiny", epochs=6, learning_rate=5e-3, batch_size=16)),
    n_recall_samples=300, metrics=MetricConfig(max_new_tokens=4))


def test_recall_study_scores_every_model_on_the_same_p_star_samples_and_is_cached(tmp_path):
    torch.set_num_threads(1)
    store = ResultStore("test", root=tmp_path)
    table = cached_recall_study(store, STAND_IN)
    assert list(table.columns) == COLUMNS and list(table["model"]) == ["p*", "p'", "p''", "unigram", "uniform"]
    r = table.set_index("model")
    p_star = markov_mixture(vocab_size=16, n_topics=1, concentration=0.05)
    recall_samples = p_star.sample(300, 4, 1.0, seed=STAND_IN.metrics.seed + 2)
    assert r.loc["p*", "overall_recall"] == pytest.approx(per_token_mean(p_star, recall_samples), abs=1e-6)
    high_data = distilled(GroundTruth.of(STAND_IN), STAND_IN.high_recall).data
    data = load_dataset(cached_kd_data(store, high_data, p_star, p_star), p_star.pad_id)
    unigram = UnigramModel.fit(data, p_star)  # the unigram of p''s own KD data
    assert r.loc["unigram", "overall_recall"] == pytest.approx(per_token_mean(unigram, recall_samples), abs=1e-6)
    assert r.loc["uniform", "overall_recall"] == pytest.approx(-math.log(13))  # 12 words and EOS
    # on a one-chain language a student learns the transitions: above the unigram, below p*
    assert r.loc["unigram", "overall_recall"] < r.loc["p'", "overall_recall"] < r.loc["p*", "overall_recall"]
    assert r.loc["p'", "sample"] and not r.loc["unigram", "sample"]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    pd.testing.assert_frame_equal(cached_recall_study(store, STAND_IN), table)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
