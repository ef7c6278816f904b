"""KD students trained as one computation (`kd_batched.train_students`) equal each student trained alone
(`kd.train_student`): final weights and every log column, run by run, to float32 rounding.

Tolerances: rtol 1e-4, atol 1e-5, not loosened. The batched forward's matmuls are other kernels than
transformers' (logits agree to ~1e-6) and its Adam rounds in another order, and up to 60 Adam steps carry that
into the weights: the largest gaps measured here are ~4e-7 in a weight, ~7e-7 in a logged loss.
"""

from dataclasses import replace

import pytest
import torch

from alignkd.lm.groundtruth import markov_mixture
from alignkd.lm.kd import TrainConfig, response_nll, shuffled_passes, split_heldout, train_student
from alignkd.lm.kd_batched import shuffled_order, train_students
from alignkd.lm.students import make_student

TOKENS = dict(vocab_size=16, bos_id=0, eos_id=1, pad_id=2)
CLOSE = dict(rtol=1e-4, atol=1e-5)
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def language():
    torch.set_num_threads(1)
    return markov_mixture(vocab_size=16, n_topics=3, seed=2)


def datasets(language, n: int) -> list:
    """One dataset per run, each its own sample (the runs differ in data as in seed)."""
    return [language.sample(n, 10, seed=10 + r) for r in range(len(SEEDS))]


def first_gradient_norm(data, config: TrainConfig) -> float:
    """The gradient norm of a fresh student's first step alone: the clip binds when it exceeds `grad_clip`."""
    train, _ = split_heldout(data, config.validation_size)
    batch = train[shuffled_order(config.seed, len(train), 1)[:config.batch_size]].trim()
    model = make_student(config.size, max_positions=config.max_positions, seed=config.seed, **TOKENS)
    nll, count = response_nll(model, batch.tokens, batch.mask, batch.prompt_length)
    (nll / count).backward()
    return float(torch.stack([p.grad.norm() for p in model.parameters()]).norm())


def assert_runs_equal(alone, batched) -> None:
    for run, ((model, log), (model_b, log_b)) in enumerate(zip(alone, batched)):
        assert list(log_b.columns) == list(log.columns)
        assert list(log_b["step"]) == list(log["step"]), f"run {run} took other steps"
        assert list(log_b["phase"]) == list(log["phase"])
        for column in ("epoch", "lr", "loss", "eval_loss"):
            torch.testing.assert_close(torch.tensor(log_b[column].to_numpy()), torch.tensor(log[column].to_numpy()),
                                       equal_nan=True, **CLOSE, msg=lambda m: f"run {run} {column}: {m}")
        trained = model_b.state_dict()
        for name, value in model.state_dict().items():
            torch.testing.assert_close(trained[name], value, **CLOSE, msg=lambda m: f"run {run} {name}: {m}")
        assert not model_b.training


def train_both(datas, config: TrainConfig):
    configs = [replace(config, seed=seed) for seed in SEEDS]
    alone = [train_student(data, c, progress=False, **TOKENS) for data, c in zip(datas, configs)]
    return alone, train_students(datas, configs, **TOKENS)


def test_early_stopped_students_equal_each_alone_though_they_stop_at_different_steps(language):
    """Patience 1: each run's stable phase ends when its own held-out loss stops improving by 0.02, it goes back to
    its best weights and anneals for a quarter of its steps, while the runs still training continue."""
    datas = datasets(language, 400)
    config = TrainConfig(size="tiny", epochs=20, learning_rate=5e-3, batch_size=32, validation_size=64,
                         eval_steps=3, early_stopping_patience=1, early_stopping_threshold=0.02, grad_clip=0.3,
                         warmup=0.05)
    assert all(first_gradient_norm(data, replace(config, seed=seed)) > 2 * config.grad_clip
               for data, seed in zip(datas, SEEDS))  # the clip binds
    alone, batched = train_both(datas, config)
    ends = [len(log) for _, log in alone]
    assert len(set(ends)) == len(SEEDS), f"the runs should stop at different steps, took {ends}"
    assert all(log["phase"].iloc[-1] == "decay" and len(log) < 220 for _, log in alone)  # stopped early
    assert_runs_equal(alone, batched)


def test_a_run_that_has_stopped_leaves_the_stack_and_changes_no_number(language):
    """`drop_finished` (the default) takes an early-stopped run out of the stacked computation; the runs that go on
    get the same micro-batches, widths included, and so the same numbers, bit for bit, as when it rides along."""
    datas = datasets(language, 400)
    configs = [replace(TrainConfig(size="tiny", epochs=20, learning_rate=5e-3, batch_size=32, validation_size=64,
                                   eval_steps=3, early_stopping_patience=1, early_stopping_threshold=0.02,
                                   grad_clip=0.3, warmup=0.05, weight_decay=0.1), seed=seed) for seed in SEEDS]
    dropped = train_students(datas, configs, **TOKENS)
    carried = train_students(datas, configs, drop_finished=False, **TOKENS)
    assert len({len(log) for _, log in dropped}) == len(SEEDS)  # they stop apart: two runs leave before the last
    for (model, log), (model_c, log_c) in zip(dropped, carried):
        assert log.equals(log_c)
        assert all(torch.equal(value, model_c.state_dict()[name]) for name, value in model.state_dict().items())


def test_students_on_the_fixed_schedule_with_weight_decay_equal_each_alone(language):
    """No early stopping: warmup-stable-decay over the epochs, held-out loss once per epoch, the best evaluation's
    weights kept; AdamW's weight decay on."""
    datas = datasets(language, 300)
    config = TrainConfig(size="tiny", epochs=3, learning_rate=5e-3, batch_size=32, validation_size=44,
                         weight_decay=0.1, grad_clip=0.3, warmup=0.1, seed=0)
    assert first_gradient_norm(datas[0], config) > 2 * config.grad_clip
    alone, batched = train_both(datas, config)
    assert list(alone[0][1]["eval_loss"].notna().to_numpy().nonzero()[0]) == [7, 15, 23]  # 256 sequences / 32
    assert_runs_equal(alone, batched)


def test_few_sequences_over_many_epochs_never_run_out_of_their_order(language):
    """40 training sequences, batches of 32, 12 epochs: a step takes a whole batch, so an epoch of ⌈40/32⌉ = 2 steps
    takes 64 rows, and the 24 steps take 768 rows, more than the 13 passes (520 rows) that the epochs alone ask
    for; `shuffled_passes` draws enough of them (train_student used to fail on an empty batch here)."""
    config = TrainConfig(size="tiny", epochs=12, learning_rate=5e-3, batch_size=32, validation_size=10, decay=0.0,
                         weight_decay=0.1)
    assert shuffled_passes(config, 40, 24, 32) * 40 >= 24 * 32 > (12 + 1) * 40
    alone, batched = train_both(datasets(language, 50), config)
    assert len(alone[0][1]) == 24
    assert_runs_equal(alone, batched)


@pytest.mark.parametrize("change, field", [(dict(learning_rate=1e-3), "learning_rate"), (dict(epochs=2.0), "epochs"),
                                           (dict(early_stopping_patience=2), "early_stopping_patience")])
def test_configs_that_differ_beyond_the_seed_are_refused_by_field(language, change, field):
    datas = datasets(language, 40)
    config = TrainConfig(size="tiny", batch_size=8, validation_size=8, early_stopping_patience=1)
    configs = [config, replace(config, seed=1), replace(config, seed=2, **change)]
    with pytest.raises(ValueError, match=f"TrainConfig.{field} differs"):
        train_students(datas, configs, **TOKENS)


@pytest.mark.parametrize("change, field", [(dict(bf16=True), "bf16"), (dict(grad_accum=2), "grad_accum")])
def test_what_only_train_student_does_is_refused_by_field(language, change, field):
    config = TrainConfig(size="tiny", batch_size=8, **change)
    with pytest.raises(ValueError, match=f"TrainConfig.{field} = .*use train_student"):
        train_students(datas=datasets(language, 40), configs=[replace(config, seed=s) for s in SEEDS], **TOKENS)


def test_datasets_of_different_lengths_are_refused(language):
    datas = datasets(language, 40)
    config = TrainConfig(size="tiny", batch_size=8)
    with pytest.raises(ValueError, match="different lengths"):
        train_students([datas[0], datas[1][:30], datas[2]], [replace(config, seed=s) for s in SEEDS], **TOKENS)
