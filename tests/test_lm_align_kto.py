"""On-policy KTO (SPEC §8): median labels, a short run on the synthetic language, its trajectory, and the
per-algorithm table of chapter 06 (`alignkd.chapters.ch06_llm.ALGORITHM_PARAMETERS`). The loss: test_objectives.py."""

import pytest
import torch

from alignkd.chapters import ch06_llm
from alignkd.lm.algorithms import ALGORITHMS, alignment_config
from alignkd.chapters import call_with, profile_values
from alignkd.chapters.ch06_llm import ALGORITHM_PARAMETERS
from alignkd.lm.groundtruth import markov_mixture
from alignkd.lm.kto import KTOConfig, label_by_median, train_kto
from alignkd.lm.reward import RewardOracle
from alignkd.lm.students import tiny_llama

COLUMNS = {"iteration", "reward_mean", "reward_std", "nll_mean", "kl", "z_ref", "chosen_reward", "rejected_reward",
           "margin", "chosen_oracle_reward", "rejected_oracle_reward", "n_desirable", "n_undesirable"}


def test_median_labels_are_balanced_and_leave_the_median_unlabelled():
    desirable, labelled = label_by_median(torch.tensor([0.3, 2.0, 1.0, 5.0, 0.1, 4.0]))
    assert desirable.tolist() == [False, True, False, True, False, True] and labelled.all()
    desirable, labelled = label_by_median(torch.tensor([1.0, 2.0, 3.0]))  # odd batch: the middle one is unlabelled
    assert desirable.tolist() == [False, False, True] and labelled.tolist() == [True, False, True]
    desirable, labelled = label_by_median(torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0, 0.5]))  # ties at the median
    assert desirable.tolist() == [False, False, False, False, True, False]
    assert labelled.tolist() == [True, False, False, False, True, True]
    desirable, labelled = label_by_median(torch.full((4,), 2.0))  # a collapsed policy: nothing to learn from
    assert not labelled.any()


def toy_run(seed=0, **overrides):
    """Align a tiny Llama towards the rarest topic of a 3-topic language (p_target = that topic's chain)."""
    settings = dict(n_iterations=16, batch_size=32, grad_steps=4, examples_per_step=16, learning_rate=3e-3, beta=0.1,
                    max_new_tokens=8, eval_every=8, device="cpu")
    language = markov_mixture(vocab_size=12, n_topics=3)
    oracle = RewardOracle.from_language_model(language.restrict([2]))
    policy, reference = (language.wrap(tiny_llama(language.vocab_size, seed=1)) for _ in range(2))
    return train_kto(policy, reference, oracle, KTOConfig(**{**settings, **overrides}), seed=seed, progress=False)


def test_short_run_raises_reward_logs_trl_series_and_is_reproducible():
    run = toy_run()
    trajectory = run.trajectory
    assert set(trajectory.columns) == COLUMNS and list(trajectory.iteration) == [0, 8, 16]
    assert trajectory.reward_mean.iloc[-1] > trajectory.reward_mean.iloc[0] + 1.0
    first = trajectory.iloc[0]  # the policy is the reference: r = 0 for every response, so z_ref and β·r are 0
    assert first.z_ref == first.kl == first.chosen_reward == first.rejected_reward == first.margin == 0.0
    assert first.n_desirable == first.n_undesirable == 16  # distinct rewards: the median splits 32 into 16 + 16
    assert first.chosen_oracle_reward > first.rejected_oracle_reward  # labels follow the oracle
    assert (trajectory.z_ref >= 0).all()
    assert trajectory.z_ref.tolist() == trajectory.kl.clip(lower=0).tolist()  # TRL's kl: the same mean, clamped
    assert trajectory.kl.iloc[-1] > 0 and trajectory.margin.iloc[1] > 0
    assert run.selected_step == int(trajectory.iteration[trajectory.margin.idxmax()])
    assert set(run.checkpoints) == {0, 8, 16}
    prefix = toy_run(n_iterations=8)  # same seed: the same samples, labels and updates
    assert prefix.trajectory.equals(trajectory.iloc[:2])
    for name, tensor in prefix.checkpoints[8].items():
        assert torch.equal(tensor, run.checkpoints[8][name])


@pytest.mark.parametrize("field, value, message", [
    ("examples_per_step", 129, "examples_per_step"),
    ("batch_size", 1, "batch_size"),
    ("beta", -1.0, "beta"),
    ("grad_steps", 0, "grad_steps"),
    ("desirable_weight", 0.0, "desirable_weight"),
    ("undesirable_weight", -1.0, "undesirable_weight"),
])
def test_bad_config_fails_on_construction_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        KTOConfig(**{field: value})


def old_chapter_alignments(params):
    """chapter_alignments as it was before its table (the if/elif), kept to pin the numbers it produced."""
    shared = dict(eval_every=params["eval_every"], device=params["device"], bf16=params["bf16"])
    iterations, batch, beta = params["iterations"], params["batch_size"], params["beta"]
    length = params["max_new_tokens"]
    configs = {}
    for label in params["algorithms"]:
        if label == "ppo":
            configs[label] = alignment_config("ppo", n_iterations=iterations, batch_size=batch,
                                              mini_batch_size=max(1, batch // 8), beta=beta,
                                              learning_rate=params["ppo_lr"], max_new_tokens=length, **shared)
        elif label == "dpo_online":
            configs[label] = alignment_config("dpo_online", n_iterations=iterations, batch_size=batch,
                                              grad_steps=params["dpo_grad_steps"], pairs_per_step=min(8, batch // 2),
                                              beta=beta, learning_rate=params["dpo_lr"], max_new_tokens=length, **shared)
        else:
            configs[label] = alignment_config(label, n_iterations=iterations, batch_size=batch, beta=beta,
                                              learning_rate=params["ppo_lr"], max_new_tokens=length, **shared)
    return configs


def test_chapter_table_keeps_the_existing_algorithms_numbers_and_sets_the_new_ones():
    params = {**profile_values("06_llm", "default"), "algorithms": ["ppo", "dpo_online", "grpo", "grpo_reward"]}
    assert call_with(ch06_llm.alignments, params) == old_chapter_alignments(params)
    new = call_with(ch06_llm.alignments, {**params, "algorithms": ["kto", "simpo"]})
    batch = params["batch_size"]
    assert (new["kto"].learning_rate, new["kto"].grad_steps, new["kto"].examples_per_step, new["kto"].beta) == (
        params["dpo_lr"], params["dpo_grad_steps"], min(16, batch), params["beta"])
    assert (new["simpo"].learning_rate, new["simpo"].grad_steps, new["simpo"].pairs_per_step) == (
        params["dpo_lr"], params["dpo_grad_steps"], min(8, batch // 2))
    assert new["simpo"].beta == type(new["simpo"])().beta  # its own β: the chapter's is a KL strength
    assert set(ALGORITHM_PARAMETERS) == set(ALGORITHMS)  # every registered algorithm says what it takes


def test_chapter_table_names_an_algorithm_without_a_row(monkeypatch):
    params = {**profile_values("06_llm", "default"), "algorithms": ["ppo", "kto"]}
    with pytest.raises(ValueError, match="algorithm = 'sft'"):  # not registered: the registry's own error
        call_with(ch06_llm.alignments, {**params, "algorithms": ["sft"]})
    monkeypatch.delitem(ch06_llm.ALGORITHM_PARAMETERS, "kto")  # registered but without a row
    with pytest.raises(ValueError, match=r"'kto'.*known: ppo, dpo_online"):
        call_with(ch06_llm.alignments, params)
