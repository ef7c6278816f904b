"""Ancestral sampling and response scoring against exact enumeration on a tiny Llama."""

import copy

import pytest
import torch
from transformers import LlamaForCausalLM

from alignkd.lm.generation import Samples, sample, sequence_logprobs, token_logprobs
from alignkd.lm.models import HFLanguageModel
from alignkd.lm.students import count_parameters, make_student, student_config, tiny_llama

V, BOS, EOS, PAD = 5, 0, 1, 2


def exact_two_token_probs(model, temperature):
    """P(x1, x2 | <bos>) with per-step temperature, by full forward passes (no KV cache)."""
    probs = {}
    with torch.no_grad():
        first = torch.softmax(model(torch.tensor([[BOS]])).logits[0, -1] / temperature, -1)
        for a in range(V):
            if a == EOS:
                probs[(a,)] = float(first[a])
                continue
            second = torch.softmax(model(torch.tensor([[BOS, a]])).logits[0, -1] / temperature, -1)
            for b in range(V):
                probs[(a, b)] = float(first[a] * second[b])
    return probs


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sample_frequencies_match_exact_probabilities(temperature):
    torch.manual_seed(0)
    model = tiny_llama(V, hidden=16, seed=3)
    with torch.no_grad():  # make the distribution far from uniform so temperature matters
        model.lm_head.weight.mul_(20)
    n = 20000
    samples = sample(model, [BOS], n, 2, temperature, eos_id=EOS, pad_id=PAD, batch_size=5000, seed=1)
    exact = exact_two_token_probs(model, temperature)
    counts = {}
    for tokens, keep in zip(samples.tokens.tolist(), samples.mask.tolist()):
        key = tuple(t for t, k in zip(tokens[1:], keep[1:]) if k)
        counts[key] = counts.get(key, 0) + 1
    assert sum(exact.values()) == pytest.approx(1.0, abs=1e-5)
    for key, p in exact.items():
        se = (p * (1 - p) / n) ** 0.5
        assert counts.get(key, 0) / n == pytest.approx(p, abs=5 * se + 1e-4), key


def test_eos_is_a_real_token_and_padding_follows():
    model = tiny_llama(V, seed=0)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # uniform next-token distribution: EOS comes early and often
    s = sample(model, [BOS], 500, 6, eos_id=EOS, pad_id=PAD, seed=0)
    ended = s.ended(EOS)
    assert ended.any() and (~ended).any()
    for tokens, keep in zip(s.tokens.tolist(), s.mask.tolist()):
        real = [t for t, k in zip(tokens, keep) if k]
        if EOS in real[1:]:
            assert real[-1] == EOS and real[1:].index(EOS) == len(real) - 2  # EOS kept, last real token
        assert all(t == PAD for t, k in zip(tokens, keep) if not k)
        assert keep == sorted(keep, reverse=True)  # right padding
    # uniform model: every response token has log-prob −log V, EOS included
    scores = sequence_logprobs(model, s)
    assert torch.allclose(scores.per_token, torch.full((500,), -torch.log(torch.tensor(float(V)))), atol=1e-5)
    assert torch.equal(scores.n_tokens, s.response_lengths)


def test_sequence_logprobs_match_hand_sum_and_ignore_padding():
    model = tiny_llama(V, seed=4)
    tokens = torch.tensor([[BOS, 3, 4, EOS, PAD, PAD], [BOS, 4, 4, 3, 3, EOS]])
    mask = tokens != PAD
    samples = Samples(tokens, mask, 1)
    scores = sequence_logprobs(model, samples, batch_size=1)
    with torch.no_grad():
        for i, length in enumerate([4, 6]):
            logp = torch.log_softmax(model(tokens[i:i + 1, :length]).logits[0], -1)
            hand = sum(float(logp[t - 1, tokens[i, t]]) for t in range(1, length))
            assert float(scores.total[i]) == pytest.approx(hand, abs=1e-5)
            assert float(scores.per_token[i]) == pytest.approx(hand / (length - 1), abs=1e-5)
    # a different padding value changes nothing
    other = Samples(torch.where(mask, tokens, torch.full_like(tokens, 3)), mask, 1)
    assert torch.allclose(sequence_logprobs(model, other).total, scores.total, atol=1e-5)
    # prompt tokens are conditioned on, not scored
    two = sequence_logprobs(model, Samples(tokens, mask, 2))
    assert torch.allclose(two.total, scores.total - token_logprobs(model, tokens, mask)[:, 0].detach(), atol=1e-5)


def test_suppressed_tokens_are_never_sampled_and_renormalised():
    policy = HFLanguageModel(tiny_llama(V, seed=5), None, [BOS], eos_id=EOS, pad_id=PAD, suppress_ids=[BOS, PAD])
    s = policy.sample(2000, 5, seed=0)
    response = s.tokens[s.response_mask]
    assert not ((response == BOS) | (response == PAD)).any()
    # renormalised over the 3 allowed tokens, a zero-logit model gives −log 3 per token, in every scorer
    with torch.no_grad():
        policy.model.lm_head.weight.zero_()
    third = -torch.log(torch.tensor(3.0))
    scores = policy.log_prob(s)
    assert torch.allclose(scores.per_token, torch.full_like(scores.per_token, third), atol=1e-5)
    assert torch.allclose(sequence_logprobs(copy.deepcopy(policy.model), s).per_token, scores.per_token)
    # wrapping again (e.g. a deep copy, as alignment makes) does not stack a second hook
    again = policy.with_model(copy.deepcopy(policy.model))
    assert len(again.model.get_output_embeddings()._forward_hooks) == 1


def test_sampling_is_deterministic_in_the_seed():
    model = tiny_llama(V, seed=0)
    a = sample(model, [BOS], 64, 8, eos_id=EOS, pad_id=PAD, seed=7)
    b = sample(model, [BOS], 64, 8, eos_id=EOS, pad_id=PAD, seed=7)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)


def test_smollm2_student_sizes_match_the_released_models():
    # SmolLM2-135M: 134,515,008 parameters; SmolLM2-360M: 361,821,120 (tied embeddings, vocab 49152)
    for size, expected in (("smollm2-135m", 134_515_008), ("smollm2-360m", 361_821_120)):
        with torch.device("meta"):  # shapes only: no memory, no init time
            model = LlamaForCausalLM(student_config(size, 49152, bos_id=1, eos_id=2, pad_id=2))
        assert count_parameters(model) == expected
    with pytest.raises(ValueError, match="allowed: smollm2-135m"):
        make_student("gpt2", 10, bos_id=0, eos_id=1, pad_id=2)


def test_bad_sampling_arguments_fail_before_work():
    model = tiny_llama(V)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, [BOS], 4, 4, 0.0, eos_id=EOS, pad_id=PAD)
    with pytest.raises(ValueError, match="prompt_ids"):
        sample(model, [], 4, 4, eos_id=EOS, pad_id=PAD)
