"""Align → PAD on language models (alignkd.pad.lm): rewards, a short training run, determinism, validation."""

import dataclasses

import pytest
import torch

from alignkd.lm.generation import sequence_logprobs
from alignkd.lm.groundtruth import BOS, PAD, UNK, markov_mixture
from alignkd.lm.students import tiny_llama
from alignkd.pad.losses import pad_loss
from alignkd.pad.lm import LMPADConfig, teacher_rewards, train_pad

torch.set_num_threads(1)
VOCAB = 12
SUPPRESS = [BOS, PAD, UNK]


def ground_truth():
    return markov_mixture(vocab_size=VOCAB, n_topics=2)


def student(seed=0):
    """A tiny Llama speaking the ground truth's language (its prompt, ids and suppressed tokens)."""
    return ground_truth().wrap(tiny_llama(VOCAB, hidden=16, seed=seed))


def tiny_config(**overrides):
    base = dict(n_responses=4, groups_per_step=8, max_new_tokens=6, n_iterations=8, learning_rate=1e-2, seed=0)
    return LMPADConfig(**{**base, **overrides})


def test_teacher_rewards_are_per_token_average_log_probs():
    teacher = student(seed=3)
    samples = student().sample(8, 6, 0.8, seed=1)
    rewards = teacher_rewards(teacher, samples, tiny_config())
    # independent: one forward pass, log-softmax over the language (suppressed tokens excluded), mean over response
    with torch.no_grad():
        logits = tiny_llama(VOCAB, hidden=16, seed=3)(input_ids=samples.tokens).logits[:, :-1].float()
    logits[..., SUPPRESS] = -torch.inf
    picked = torch.log_softmax(logits, -1).gather(-1, samples.tokens[:, 1:, None])[..., 0]
    keep = samples.response_mask[:, 1:]
    expected = torch.where(keep, picked, torch.zeros(())).sum(1) / keep.sum(1)
    torch.testing.assert_close(rewards, expected, rtol=1e-5, atol=1e-5)
    # the exact ground truth as teacher: its own per-token density
    exact = ground_truth()
    torch.testing.assert_close(teacher_rewards(exact, samples, tiny_config()), exact.log_prob(samples).per_token)


def ranking_loss(model, teacher, config, seed=12345):
    """PPD loss of `model` against `teacher` on a fixed held-out batch of the model's own samples."""
    n, groups = config.n_responses, 16
    samples = model.sample(groups * n, config.max_new_tokens, config.tau, seed=seed)
    with torch.no_grad():
        s = sequence_logprobs(model.model, samples).per_token.reshape(groups, n)
    t = teacher_rewards(teacher, samples, config).reshape(groups, n)
    return pad_loss("ppd", s, t, config.beta).mean().item()


def test_train_pad_moves_student_rankings_toward_teacher():
    teacher = ground_truth()
    config = tiny_config(n_iterations=25)
    model = student()
    before = ranking_loss(model, teacher, config)
    log = train_pad(model, teacher, config)
    after = ranking_loss(model, teacher, config)
    assert list(log.columns) == ["step", "loss", "teacher_reward", "student_reward", "top1_agreement",
                                 "response_length"]
    assert len(log) == 25 and log["loss"].notna().all()
    assert after < 0.8 * before, (before, after)
    assert log["loss"].tail(5).mean() < log["loss"].head(5).mean()


def test_same_seed_same_numbers():
    teacher = ground_truth()
    config = tiny_config(n_iterations=3)
    students = [student(), student()]
    logs = [train_pad(s, teacher, config) for s in students]
    assert logs[0].equals(logs[1])
    for a, b in zip(students[0].model.parameters(), students[1].model.parameters()):
        assert torch.equal(a, b)
    other = train_pad(student(), teacher, dataclasses.replace(config, seed=1))
    assert not other["loss"].equals(logs[0]["loss"])


@pytest.mark.parametrize("field, value", [("n_responses", 1), ("beta", 0.0), ("beta", -1.0), ("loss", "kl"),
                                          ("tau", 0.0), ("group_size", 3), ("student_init", "p_high")])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        LMPADConfig(**{field: value})
