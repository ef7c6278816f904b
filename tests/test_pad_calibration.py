"""MCQ-calibrated teacher rewards: r̂ = (1−α) r + α log p_sel, position bias cancelled by order averaging."""

import math

import pytest
import torch

from alignkd.pad.calibration import (
    aggregate_orders,
    calibrate,
    letter_log_probs,
    letter_token_ids,
    mcq_prompt,
    option_orders,
    selection_log_probs,
)


WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "Which", "response", "is", "best",
         "?", "Answer", ":", ".", "Q", "story"]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2}
    for token in list("ABCDEFGH") + WORDS:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def _model(vocab_size):
    from alignkd.lm.students import tiny_llama

    model = tiny_llama(vocab_size, hidden=32, layers=2, heads=2, bos_id=2, eos_id=2, pad_id=1, seed=3)
    with torch.no_grad():  # larger logits than the 0.02 init, so that letter probabilities differ clearly
        model.lm_head.weight.mul_(40.0)
    return model


def test_alpha_zero_leaves_rewards_unchanged_and_alpha_mixes_linearly():
    rewards = torch.tensor([-1.5, -2.0, -0.7])
    log_p_sel = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    assert torch.equal(calibrate(rewards, log_p_sel, 0.0), rewards)
    assert torch.allclose(calibrate(rewards, log_p_sel, 1.0), log_p_sel)
    mixed = calibrate(rewards, log_p_sel, 0.8)
    assert mixed[0].item() == pytest.approx(0.2 * -1.5 + 0.8 * math.log(0.2), abs=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        calibrate(rewards, log_p_sel, 1.5)


def test_cyclic_orders_put_every_response_in_every_position_once():
    orders = option_orders(3, "cyclic", n_groups=2)
    assert orders.shape == (2, 3, 3)
    assert orders[0].tolist() == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    for position in range(3):
        assert sorted(orders[0, :, position].tolist()) == [0, 1, 2]
    assert option_orders(2, "cyclic")[0].tolist() == [[0, 1], [1, 0]]  # n = 2: both orders
    random = option_orders(5, "random", n_groups=4, generator=torch.Generator().manual_seed(0))
    assert random.shape == (4, 1, 5) and all(sorted(r[0].tolist()) == list(range(5)) for r in random)
    with pytest.raises(ValueError, match="order"):
        option_orders(3, "sorted")


def test_order_averaging_cancels_an_additive_position_bias_exactly():
    content = torch.tensor([[0.3, -1.0, 1.2, 0.0], [2.0, 0.0, 0.0, -0.5]])  # what the teacher thinks of each
    bias = torch.tensor([2.5, 0.4, -0.3, -1.0])  # what it thinks of each letter, whatever the content
    for order, cancels in (("cyclic", True), ("fixed", False)):
        orders = option_orders(4, order, n_groups=2)
        shown = torch.gather(content[:, None].expand(-1, orders.shape[1], -1), -1, orders)
        table = torch.log_softmax(shown + bias, -1)
        result = aggregate_orders(table, orders)
        assert torch.allclose(result.exp().sum(-1), torch.ones(2))
        if cancels:
            assert torch.allclose(result, torch.log_softmax(content, -1), atol=1e-6)
        else:
            assert torch.allclose(result, torch.log_softmax(content + bias, -1), atol=1e-6)


def test_mcq_prompt_layout():
    prompt = mcq_prompt("Q", ["the cat sat ", "a dog ran"])
    assert prompt == "Q\n\nWhich response is best?\nA. the cat sat\nB. a dog ran\nAnswer:"


def test_selection_with_a_tiny_llama_matches_prompt_by_prompt_scoring():
    tokenizer = _tokenizer()
    model = _model(len(tokenizer))
    groups = [["the cat sat on a mat", "a dog ran far away", "the dog sat"],
              ["a cat", "the mat is the best mat on the mat", "dog"]]
    batched = selection_log_probs(model, tokenizer, "Q", groups, order="cyclic", batch_size=4)
    letters = letter_token_ids(tokenizer, 3)
    expected = []
    for group in groups:
        per_response = torch.zeros(3)
        for shift in range(3):
            shown = [(i + shift) % 3 for i in range(3)]
            ids = tokenizer(mcq_prompt("Q", [group[i] for i in shown]), add_special_tokens=False).input_ids
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            log_probs = torch.log_softmax(logits[letters], -1)
            for position, response in enumerate(shown):
                per_response[response] += log_probs[position] / 3
        expected.append(torch.log_softmax(per_response, -1))
    assert torch.allclose(batched, torch.stack(expected), atol=1e-4)
    assert torch.allclose(batched.exp().sum(-1), torch.ones(2), atol=1e-6)
    # One fixed order: the raw letter distribution of each prompt, far from uniform for this model.
    fixed = selection_log_probs(model, tokenizer, "Q", groups, order="fixed", batch_size=4)
    for group, row in zip(groups, fixed):
        ids = tokenizer(mcq_prompt("Q", group), add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert torch.allclose(row, torch.log_softmax(logits[letters], -1), atol=1e-4)
    assert fixed.exp().max() - fixed.exp().min() > 0.1


def test_tiny_llama_position_bias_is_removed_by_cyclic_but_not_by_fixed_order():
    # A random tiny Llama's letter preferences barely depend on the options: nearly pure position bias.
    tokenizer = _tokenizer()
    model = _model(len(tokenizer))
    same = [["the cat sat", "the cat sat"]]  # identical options: any preference is position bias
    fixed = selection_log_probs(model, tokenizer, "Q", same, order="fixed").exp()
    cyclic = selection_log_probs(model, tokenizer, "Q", same, order="cyclic").exp()
    assert abs(fixed[0, 0].item() - 0.5) > 0.3
    assert cyclic[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-5)
    raw = letter_log_probs(model, tokenizer, [mcq_prompt("Q", same[0])], 2).exp()
    assert torch.allclose(raw, fixed, atol=1e-5)


def test_a_tokenizer_without_letters_fails_fast():
    from alignkd.lm.groundtruth import markov_tokenizer

    with pytest.raises(ValueError, match="option letter 'A'"):
        letter_token_ids(markov_tokenizer(16), 2)
