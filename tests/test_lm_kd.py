"""The KD stage: schedule, topic sharpening, resumable sharded data, and what training does."""

import pytest
import torch

from alignkd.lm.groundtruth import markov_mixture
from alignkd.lm.kd import (KDDataConfig, TrainConfig, WarmupStableDecay, causal_lm_loss, generate_dataset,
                           heldout_loss, load_dataset, split_heldout, topic_keep_probability, train_student,
                           wsd_lambda)
from alignkd.lm.metrics import per_token_mean
from alignkd.lm.students import tiny_llama


def test_wsd_schedule_warmup_stable_decay():
    f = wsd_lambda(100, warmup=0.01, decay=0.2)  # App. C.2: 1 % warmup, 20 % decay
    assert f(0) == 1.0  # one warmup step reaches the peak
    assert [f(s) for s in (1, 50, 79)] == [1.0, 1.0, 1.0]
    assert f(80) == pytest.approx(1.0) and f(90) == pytest.approx(0.5) and f(99) == pytest.approx(0.05)
    g = wsd_lambda(1000, warmup=0.1, decay=0.2)
    assert g(0) == pytest.approx(0.01) and g(49) == pytest.approx(0.5) and g(99) == 1.0


def test_topic_keep_probability_sharpens_masses_like_a_power():
    mass = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    keep = topic_keep_probability(mass, 0.5)  # (m / max)^(1/τ − 1) = (m / 0.6)^1
    assert torch.allclose(keep, torch.tensor([1.0, 0.5, 1 / 6], dtype=torch.float64))
    kept = mass * keep
    assert torch.allclose(kept / kept.sum(), mass ** 2 / (mass ** 2).sum())  # ∝ m^(1/τ_topic)
    assert torch.equal(topic_keep_probability(mass, 1.0), torch.ones(3, dtype=torch.float64))


def test_dataset_generation_resumes_from_shards(tmp_path):
    gt = markov_mixture(vocab_size=12, n_topics=3)
    config = KDDataConfig(n_samples=250, max_new_tokens=8, tau=0.9, shard_size=100, seed=3)
    whole = load_dataset(generate_dataset(gt, config, tmp_path / "a", progress=False), gt.pad_id)

    class Interrupted(Exception):
        pass

    class FailingTeacher:  # dies while sampling the second shard
        calls = 0

        def sample(self, *args, **kwargs):
            FailingTeacher.calls += 1
            if FailingTeacher.calls == 2:
                raise Interrupted
            return gt.sample(*args, **kwargs)

    with pytest.raises(Interrupted):
        generate_dataset(FailingTeacher(), config, tmp_path / "b", progress=False)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["shard_00000.pt", "shard_00000.sha256"]  # no partial shard
    resumed = load_dataset(generate_dataset(gt, config, tmp_path / "b", progress=False), gt.pad_id)
    assert len(whole) == len(resumed) == 250
    assert torch.equal(whole.tokens, resumed.tokens) and torch.equal(whole.mask, resumed.mask)


@pytest.mark.parametrize("damage", ["garbage", "flipped bit", "no checksum"])
def test_a_bad_shard_is_dropped_and_sampled_again(tmp_path, damage):
    """A resumable KD folder with a garbage, altered or unchecked shard resumes to the same dataset (the shard's
    seed depends only on its index); on main before checksums a garbage shard crashed every re-run."""
    gt = markov_mixture(vocab_size=12, n_topics=3)
    config = KDDataConfig(n_samples=250, max_new_tokens=8, tau=0.9, shard_size=100, seed=3)
    whole = load_dataset(generate_dataset(gt, config, tmp_path / "a", progress=False), gt.pad_id)
    shard = tmp_path / "a" / "shard_00001.pt"
    if damage == "garbage":
        shard.write_bytes(b"not a tensor file")
    elif damage == "flipped bit":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x10
        shard.write_bytes(bytes(data))
    else:
        shard.with_suffix(".sha256").unlink()
    with pytest.warns(UserWarning, match="shard_00001.pt"):
        again = load_dataset(generate_dataset(gt, config, tmp_path / "a", progress=False), gt.pad_id)
    assert torch.equal(whole.tokens, again.tokens) and torch.equal(whole.mask, again.mask)


def test_topic_sharpening_prunes_the_rare_topic(tmp_path):
    gt = markov_mixture()
    classify = lambda s: gt.topic_posterior(s).argmax(1)  # noqa: E731
    plain = load_dataset(generate_dataset(gt, KDDataConfig(n_samples=6000, seed=1), tmp_path / "plain",
                                          progress=False), gt.pad_id)
    sharp = load_dataset(generate_dataset(gt, KDDataConfig(n_samples=6000, tau_topic=0.5, seed=1), tmp_path / "sharp",
                                          classify=classify, progress=False), gt.pad_id)
    rare = lambda s: float((classify(s) == 7).double().mean())  # noqa: E731
    # kept mass ∝ m^2: the rare topic (≈3.5 %) falls to ≈ 0.035² / Σ m² ≈ 0.5 %
    assert rare(plain) > 0.025 and rare(sharp) < 0.012
    with pytest.raises(ValueError, match="classifier"):
        generate_dataset(gt, KDDataConfig(tau_topic=0.5), tmp_path / "x")


def test_eos_is_learned_not_masked():
    tokens = torch.tensor([[0, 5, 6, 1, 2, 2]])
    mask = tokens != 2
    model = tiny_llama(8, seed=0)
    logits = model(tokens).logits[0, :-1]
    nll = -torch.log_softmax(logits, -1)[torch.arange(5), tokens[0, 1:]]
    # the loss averages the 3 response tokens 5, 6 and EOS; padding after EOS does not count
    assert float(causal_lm_loss(model, tokens, mask, 1).detach()) == pytest.approx(float(nll[:3].mean().detach()), abs=1e-5)


@pytest.fixture(scope="module")
def language():
    torch.set_num_threads(1)
    gt = markov_mixture(vocab_size=16, n_topics=3, seed=2)
    return gt, gt.sample(1000, 10, seed=99)


def test_student_trained_on_samples_lowers_recall_nll(language):
    gt, held_out = language
    data = gt.sample(3000, 10, seed=0)
    config = TrainConfig(size="tiny", epochs=2, learning_rate=5e-3, batch_size=64)
    untrained = gt.wrap(tiny_llama(16, seed=0))
    model, log = train_student(data, config, vocab_size=16, bos_id=0, eos_id=1, pad_id=2, progress=False)
    student = gt.wrap(model)
    before, after = per_token_mean(untrained, held_out), per_token_mean(student, held_out)
    assert before == pytest.approx(-torch.log(torch.tensor(16.0)).item(), abs=0.3)  # near uniform at init
    assert after > before + 0.5
    assert log["loss"].iloc[-1] < log["loss"].iloc[0] - 0.5
    # EOS learned: the student's responses end, and their mean length is close to the data's
    own = student.sample(1000, 10, seed=5)
    assert abs(float(own.response_lengths.double().mean()) - float(data.response_lengths.double().mean())) < 1.0


def test_lower_sampling_temperature_raises_precision_and_lowers_recall(language):
    gt, held_out = language
    config = TrainConfig(size="tiny", epochs=2, learning_rate=5e-3, batch_size=64)
    results = {}
    for tau in (1.0, 0.6):
        model, _ = train_student(gt.sample(3000, 10, tau, seed=1), config, vocab_size=16, bos_id=0, eos_id=1,
                                 pad_id=2, progress=False)
        student = gt.wrap(model)
        results[tau] = (per_token_mean(gt, student.sample(1000, 10, seed=2)), per_token_mean(student, held_out))
    (precision_hot, recall_hot), (precision_cold, recall_cold) = results[1.0], results[0.6]
    assert precision_cold > precision_hot
    assert recall_cold < recall_hot


def test_gpu_settings_without_a_gpu_fail_before_work():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert TrainConfig(bf16=True).bf16  # bf16 autocast runs on the CPU too
    with pytest.raises(RuntimeError, match="needs a GPU"):
        TrainConfig(device="cuda")
    with pytest.raises(ValueError, match="allowed: smollm2-135m"):
        TrainConfig(size="huge")


def test_warmup_stable_decay_started_by_early_stopping():
    schedule = WarmupStableDecay(2, None, 10)  # decay not decided yet: stable after warmup
    assert [schedule(s) for s in (0, 1, 50)] == [0.5, 1.0, 1.0] and schedule.phase(50) == "stable"
    schedule.start_decay(60, 4)
    assert [schedule(s) for s in (59, 60, 61, 63, 64)] == [1.0, 1.0, 0.75, 0.25, 0.0]
    assert schedule.phase(0) == "warmup" and schedule.phase(61) == "decay"


def test_early_stopping_anneals_from_the_best_weights_and_keeps_the_curve(language):
    gt, _ = language
    data = gt.sample(1400, 10, seed=3)
    # a threshold no step can beat: the first evaluation is the only improvement, so the stable phase ends
    # after 1 + patience evaluations (steps 4, 8, 12), and a decay of 0.2 / 0.8 · 12 = 3 steps follows
    config = TrainConfig(size="tiny", epochs=50, learning_rate=5e-3, batch_size=64, validation_size=400, eval_steps=4,
                         early_stopping_patience=2, early_stopping_threshold=10.0, warmup=0.0)
    model, log = train_student(data, config, vocab_size=16, bos_id=0, eos_id=1, pad_id=2, progress=False)
    assert len(log) == 15 and list(log["step"]) == list(range(15))
    assert list(log.loc[log["eval_loss"].notna(), "step"]) == [3, 7, 11, 14]
    assert list(log["phase"]) == ["warmup"] + ["stable"] * 11 + ["decay"] * 3  # warmup is never below one step
    assert list(log["lr"][11:]) == pytest.approx([5e-3, 5e-3 * 2 / 3, 5e-3 / 3, 0.0])
    assert log["epoch"].iloc[0] == pytest.approx(1 / 16)  # 1000 training sequences, batches of 64
    # the returned weights are the best evaluation's: recompute its held-out loss
    train, heldout = split_heldout(data, 400)
    assert len(train) == 1000 and torch.equal(heldout.tokens, data[1000:].tokens)
    assert heldout_loss(model, heldout) == pytest.approx(log["eval_loss"].min(), abs=1e-5)


def test_early_stopping_runs_until_held_out_loss_stops_improving(language):
    gt, _ = language
    data = gt.sample(2200, 10, seed=4)
    config = TrainConfig(size="tiny", epochs=40, learning_rate=5e-3, batch_size=64, validation_size=200,
                         early_stopping_patience=1, early_stopping_threshold=0.01)
    _, log = train_student(data, config, vocab_size=16, bos_id=0, eos_id=1, pad_id=2, progress=False)
    curve = log.loc[log["eval_loss"].notna() & (log["phase"] != "decay"), "eval_loss"].to_numpy()
    assert len(curve) < 40  # stopped well before the 40-epoch cap
    assert all(a - b > 0.01 for a, b in zip(curve[:-2], curve[1:-1]))  # every evaluation but the last improved
    assert curve[-2] - curve[-1] <= 0.01  # the last did not: that is what stopped it
    assert log["phase"].iloc[-1] == "decay"


def test_early_stopping_needs_held_out_data():
    with pytest.raises(ValueError, match="validation_size"):
        TrainConfig(early_stopping_patience=2)
    with pytest.raises(ValueError, match="early_stopping_threshold"):
        TrainConfig(validation_size=10, early_stopping_patience=2, early_stopping_threshold=-1.0)
    with pytest.raises(ValueError, match="nothing to train on"):
        split_heldout(markov_mixture(vocab_size=12, n_topics=2).sample(10, 4), 10)
