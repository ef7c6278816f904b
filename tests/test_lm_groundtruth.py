"""Ground truths: the synthetic language's exact densities, the offline SmolLM2, and bad input."""

import itertools
import math

import pytest
import torch

from alignkd.lm.generation import Samples
from alignkd.lm.groundtruth import BOS, EOS, PAD, MarkovMixtureConfig, load_ground_truth, markov_mixture, smollm2_gguf_path
from alignkd.lm.models import check_tokenizers
from alignkd.lm.students import tiny_llama


def all_sequences(words, cap):
    """Every response of the language up to `cap` tokens: ended by EOS, or truncated at the cap."""
    out = []
    for length in range(1, cap + 1):
        for xs in itertools.product(words + [EOS], repeat=length):
            if EOS in xs[:-1]:
                continue
            if length < cap and xs[-1] != EOS:
                continue
            out.append(xs)
    return out


def as_samples(sequences, cap):
    tokens = torch.full((len(sequences), cap + 1), PAD)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, xs in enumerate(sequences):
        tokens[i, 0] = BOS
        tokens[i, 1:1 + len(xs)] = torch.tensor(xs)
        mask[i, :1 + len(xs)] = True
    return Samples(tokens, mask, 1)


@pytest.fixture(scope="module")
def small():
    return markov_mixture(vocab_size=7, n_topics=3, eos_prob=0.3, smoothing=0.05, seed=1)


def test_exact_log_probs_match_brute_force_enumeration(small):
    cap = 4
    sequences = all_sequences([4, 5, 6], cap)
    samples = as_samples(sequences, cap)
    scores = small.log_prob(samples)
    # a distribution over all responses up to the cap: sums to one
    assert float(scores.total.double().exp().sum()) == pytest.approx(1.0, abs=1e-5)
    # each sequence by hand: Σ_k w_k π_k(x1) Π P_k(x_t | x_{t−1})
    w, init, trans = small.weights, small.log_init.exp(), small.log_trans.exp()
    for xs, total in zip(sequences[:40], scores.total[:40]):
        p = 0.0
        for k in range(3):
            term = float(w[k] * init[k, xs[0]])
            for a, b in zip(xs[:-1], xs[1:]):
                term *= float(trans[k, a, b])
            p += term
        assert float(total) == pytest.approx(math.log(p), abs=1e-5)
    assert torch.equal(scores.n_tokens, samples.response_lengths)


def test_sampling_matches_exact_probabilities_and_temperature_sharpens(small):
    cap, n = 2, 40000
    sequences = all_sequences([4, 5, 6], cap)
    exact = small.log_prob(as_samples(sequences, cap)).total.double().exp()
    drawn = small.sample(n, cap, 1.0, seed=3)
    index = {xs: i for i, xs in enumerate(sequences)}
    counts = torch.zeros(len(sequences), dtype=torch.float64)
    for tokens, keep in zip(drawn.tokens.tolist(), drawn.mask.tolist()):
        counts[index[tuple(t for t, k in zip(tokens[1:], keep[1:]) if k)]] += 1
    se = (exact * (1 - exact) / n).sqrt()
    assert torch.all((counts / n - exact).abs() <= 5 * se + 1e-4)
    # lower token temperature: higher precision (E log p* of the samples), fewer distinct sequences
    hot, cold = small.sample(20000, 6, 1.0, seed=4), small.sample(20000, 6, 0.5, seed=4)
    assert small.log_prob(cold).per_token.mean() > small.log_prob(hot).per_token.mean() + 0.1


def test_target_is_the_rare_topics_exact_chain():
    p_star = markov_mixture()  # SPEC §4: K = 8, Zipf 1.2
    weights = p_star.weights
    assert float(weights[-1]) == pytest.approx(8 ** -1.2 / sum(k ** -1.2 for k in range(1, 9)), rel=1e-9)
    assert float(weights[-1]) == pytest.approx(0.0353, abs=5e-4)  # "rarest topic 3.5 %"
    target = p_star.restrict([7])
    s = target.sample(2000, 24, seed=0)
    # samples of p_target are classified to topic 7 by p*'s posterior almost always
    assert float((p_star.topic_posterior(s).argmax(1) == 7).double().mean()) > 0.9
    # log p*(x) >= log w_7 + log p_target(x) for every x (one term of the mixture)
    assert torch.all(p_star.log_prob(s).total >= target.log_prob(s).total + math.log(float(weights[7])) - 1e-4)


def test_topic_markers_decide_the_topic_at_the_first_token():
    plain = markov_mixture()
    marked = markov_mixture(topic_markers=2)  # topic k opens with word 4 + 2k or 5 + 2k
    assert torch.equal(plain.log_trans, marked.log_trans)  # only the opening differs
    opening = marked.log_init.exp()
    assert torch.allclose(opening.sum(1), torch.ones(8, dtype=torch.float64))
    # all but `smoothing` of topic k's opening mass is on its own two words, half each
    words = 1 - 0.01 / 61  # the first step also gives EOS its smoothing share
    assert float(opening[7, 18]) == pytest.approx((0.99 / 2 + 0.01 / 60) * words, rel=1e-9)
    own = torch.stack([opening[k, 4 + 2 * k:6 + 2 * k].sum() for k in range(8)])
    assert torch.allclose(own, torch.full((8,), (0.99 + 2 * 0.01 / 60) * words, dtype=torch.float64))
    # after one token the posterior is nearly one-hot: the weight ratio (<= 12) against the opening ratio (~3000)
    first = as_samples([(4 + 2 * k, EOS) for k in range(8)], 2)
    posterior = marked.topic_posterior(first)
    assert torch.equal(posterior.argmax(1), torch.arange(8)) and float(posterior.max(1).values.min()) > 0.99
    # so the share of the target topic among samples is its weight
    s = marked.sample(20000, 12, seed=3)
    share = float((marked.topic_posterior(s).argmax(1) == 7).double().mean())
    assert share == pytest.approx(float(marked.weights[7]), abs=4 * math.sqrt(0.035 * 0.965 / 20000))
    with pytest.raises(ValueError, match="topic_markers"):
        MarkovMixtureConfig(vocab_size=12, n_topics=3, topic_markers=3)  # 9 marker words, 8 words


def test_markov_tokenizer_round_trips(small):
    s = small.sample(5, 6, seed=0)
    text = s.texts(small.tokenizer)[0]
    ids = small.tokenizer(text, add_special_tokens=False).input_ids
    assert ids == [t for t, k in zip(s.tokens[0].tolist(), s.response_mask[0].tolist()) if k]


def test_bad_configurations_fail_before_work():
    with pytest.raises(ValueError, match="n_topics"):
        MarkovMixtureConfig(n_topics=0)
    with pytest.raises(ValueError, match="target_topic"):
        MarkovMixtureConfig(n_topics=3, target_topic=5)
    with pytest.raises(ValueError, match="allowed: markov_mixture"):
        load_ground_truth("gpt-4")
    with pytest.raises(FileNotFoundError, match="missing weights"):
        load_ground_truth("hf:/nonexistent/folder")


def test_hub_id_while_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        load_ground_truth("hf:HuggingFaceTB/SmolLM2-1.7B")


def test_incompatible_tokenizers_and_vocabularies_fail(small):
    with pytest.raises(ValueError, match="incompatible"):
        small.wrap(tiny_llama(4))  # 4 embeddings for a 7-token language
    other = markov_mixture(vocab_size=9).tokenizer
    with pytest.raises(ValueError, match="incompatible"):
        check_tokenizers(small.tokenizer, other)
    check_tokenizers(small.tokenizer, markov_mixture(vocab_size=7, seed=5).tokenizer)  # same vocabulary: fine


def test_gguf_smollm2_loads_offline_and_scores_a_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        smollm2_gguf_path()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    torch.set_num_threads(1)
    lm = load_ground_truth("gguf:smollm2")
    assert lm.model.config.num_hidden_layers == 30 and lm.model.config.hidden_size == 576
    assert lm.prompt_ids == [504]  # "The"
    good = lm.tokenizer("The capital of France is Paris.", add_special_tokens=False).input_ids
    bad = lm.tokenizer("The Paris is of capital France.", add_special_tokens=False).input_ids
    tokens = torch.tensor([good, bad])
    scores = lm.log_prob(Samples(tokens, torch.ones_like(tokens, dtype=torch.bool), 1))
    # measured once on this file: −2.567 nats per token for the fluent sentence
    assert float(scores.per_token[0]) == pytest.approx(-2.567, abs=0.05)
    assert float(scores.per_token[0]) > float(scores.per_token[1]) + 1.0
