"""Align → PAD on language models (alignkd.pad.lm): rewards, a short training run, determinism, validation."""

import dataclasses

import pandas as pd
import pytest
import torch

from alignkd.lm.generation import sequence_logprobs
from alignkd.lm.groundtruth import BOS, PAD, UNK, markov_mixture
from alignkd.lm.students import tiny_llama
from alignkd.pad.losses import pad_loss
from alignkd.pad.lm import (LMPADConfig, comparison_rows, comparison_table, escape_claim_rows, escape_verdicts, teacher_rewards,
                            train_pad)

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


def test_comparison_rows_table_and_verdicts_from_a_hand_made_run():
    nan = float("nan")

    def row(pipeline, model, seed, reward, target, recall, final_tau=nan):
        return {"algorithm": "ppo", "seed": seed, "pipeline": pipeline, "model": model, "final_tau": final_tau,
                "reward": reward, "target_precision": target, "overall_recall": recall, "overall_precision": -2.0}

    pipelines = pd.DataFrame([
        row("reference", "p''", -1, 0.5, -6.0, -4.0), row("reference", "p_target", -1, 9.0, -1.0, -9.0),
        row("K-A", "p''_KA", 0, 1.0, -5.0, -4.5), row("K-A", "p''_KA", 1, 2.0, -4.0, -4.5),
        row("A-K", "p'_AK", 0, 4.0, -2.0, -3.0),
        row("A-K", "p''_AK", 0, 3.0, -3.0, -3.5, 0.95), row("A-K", "p''_AK", 0, 99.0, 99.0, 99.0, 0.925),
    ])
    pad = pd.DataFrame([row("A→PAD (ppd, p_low)", "p''_PAD", 0, 2.0, -4.0, -3.9),
                        row("A→PAD (ppd, p_low)", "p''_PAD", 1, 2.0, -4.0, -4.1)])
    rows = comparison_rows(pipelines, [pad], main_tau=0.95)
    assert list(rows["name"]) == ["p''", "K-A", "K-A", "p'_AK (teacher)", "A-K", "A→PAD (ppd, p_low)",
                                  "A→PAD (ppd, p_low)"]  # p_target and the other final τ are gone
    table = comparison_table(rows)
    assert table.loc["K-A", ("reward", "mean")] == 1.5 and table.loc["K-A", ("reward", "std")] == pytest.approx(0.5 ** 0.5)
    [verdict] = escape_verdicts(rows)
    # PAD: reward 2.0 > K-A's 1.5 and target precision −4.0 > −4.5, recall −4.0 against A-K's −3.5
    assert "escapes the low-recall trap" in verdict and "(-0.500)" in verdict
    worse = pad.assign(reward=1.0)
    assert "does not escape" in escape_verdicts(comparison_rows(pipelines, [worse], main_tau=0.95))[0]


def test_escape_claims_pair_pad_with_k_a_by_seed():
    def row(name, seed, reward):
        return {"name": name, "seed": seed, "reward": reward}

    rows = pd.DataFrame([row("p''", -1, 0.1), row("K-A", 0, 1.0), row("K-A", 1, 2.0), row("K-A", 2, 3.0),
                         row("A→PAD (ppd, p_low)", 0, 2.0), row("A→PAD (ppd, p_low)", 1, 3.5),
                         row("A→PAD (ppd, p_low)", 2, 4.0),  # gaps 1.0, 1.5, 1.0: all above 0
                         row("A→PAD (vpd, fresh)", 0, 1.0)])  # one seed: no interval
    claims = escape_claim_rows(rows).set_index("claim_id")
    first = claims.loc["lm-escape-0"]
    assert first.ours == pytest.approx(3.5 / 3) and 1.0 <= first.low <= first.ours <= first.high <= 1.5
    assert first.verdict == "holds" and "3 seeds" in first.reason
    second = claims.loc["lm-escape-1"]
    assert second.verdict == "not testable here" and second.ours == 0.0 and "1 seed(s)" in second.reason
    two_seeds = escape_claim_rows(rows[rows.seed != 2]).set_index("claim_id").loc["lm-escape-0"]
    assert two_seeds.verdict == "not testable here" and two_seeds.ours == pytest.approx(1.25)
    from alignkd.claims import make_row
    for record in escape_claim_rows(rows).to_dict("records"):  # every row is one claims.record accepts
        make_row(**{k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()})


def test_escape_claims_are_not_testable_when_the_premise_fails():
    from alignkd.lm.premise import PremiseCheck, PremiseRule

    rows = pd.DataFrame([{"name": n, "seed": s, "reward": r} for n, r in (("K-A", 1.0), ("A→PAD (ppd, p_low)", 2.0))
                         for s in range(3)])
    failed = PremiseCheck(PremiseRule(), pd.DataFrame({"model": ["p*", "p'", "p''"], "target_share": [0.04, 0.04, 0.03],
                                                       "low": [0.04, 0.04, 0.03], "high": [0.04, 0.04, 0.03]}))
    [row] = escape_claim_rows(rows, premise=failed).to_dict("records")
    assert row["verdict"] == "not testable here" and "fail the premise" in row["reason"]
    assert escape_claim_rows(rows).iloc[0]["verdict"] == "holds"
