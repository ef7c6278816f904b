"""Align → PAD on the MoG testbed: tempered sampling, the PAD step, batched training, the comparison."""

import math

import pandas as pd
import pytest
import torch

from alignkd.mog.mixture import Mixture, generators
from alignkd.mog.pipelines import Setup, Sweep, run_sweep
from alignkd.pad.mog import (
    Comparison,
    PADConfig,
    align_then_pad,
    fresh_student,
    pad_label,
    pad_step_loss,
    run_comparison,
    tempered,
    train,
)


def _mixture(logits, means, scales):
    return Mixture(torch.tensor([logits], dtype=torch.float32), torch.tensor([means], dtype=torch.float32),
                   torch.tensor([scales], dtype=torch.float32).log())


def _grid(half_width=4.0, steps=401):
    axis = torch.linspace(-half_width, half_width, steps)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(1, -1, 2), (axis[1] - axis[0]).item() ** 2


def test_temperature_one_is_the_model_itself():
    q = _mixture([0.3, -0.2], [[0.0, 1.0], [1.5, -1.5]], [[0.3, 0.5], [0.2, 0.2]])
    x = torch.randn(1, 50, 2)
    assert torch.allclose(tempered(q, 1.0).log_prob(x), q.log_prob(x), atol=1e-5)


def test_temperature_of_one_gaussian_is_exact():
    # q^{1/τ} / Z for one Gaussian is N(μ, τΣ): compare with the normalised power on a grid.
    q = _mixture([0.0], [[0.5, -0.3]], [[0.4, 0.25]])
    x, cell = _grid()
    tau = 0.8
    powered = q.log_prob(x) / tau
    log_z = torch.logsumexp(powered, -1) + math.log(cell)
    assert torch.allclose(tempered(q, tau).log_prob(x), powered - log_z, atol=1e-3)
    scales = tempered(q, tau).log_scales.exp()
    assert torch.allclose(scales, torch.tensor([[[0.4, 0.25]]]) * math.sqrt(tau), atol=1e-6)


def test_temperature_of_separated_mixture_matches_normalised_power():
    # Unequal weights and widths, far apart: the tempered weights are α^{1/τ} σ^{2(1−1/τ)} normalised.
    q = _mixture([math.log(0.7), math.log(0.3)], [[-1.5, 1.5], [1.5, -1.5]], [[0.2, 0.2], [0.35, 0.35]])
    x, cell = _grid()
    tau = 0.8
    powered = q.log_prob(x) / tau
    target = powered - (torch.logsumexp(powered, -1) + math.log(cell))
    mass = target.exp() * cell
    # where the tempered density has mass, the two agree
    assert (mass * (tempered(q, tau).log_prob(x) - target).abs()).sum().item() < 1e-3
    w = tempered(q, tau).weights()[0]
    raw = torch.tensor([0.7 ** 1.25 * 0.2 ** (2 * (1 - 1.25)), 0.3 ** 1.25 * 0.35 ** (2 * (1 - 1.25))])
    assert torch.allclose(w, raw / raw.sum(), atol=1e-5)
    assert w[0].item() > 0.7  # τ < 1 sharpens the heavier, narrower component


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="loss"):
        PADConfig(loss="kl")
    with pytest.raises(ValueError, match="n_responses"):
        PADConfig(n_responses=9)
    with pytest.raises(ValueError, match="group_size"):
        PADConfig(n_responses=6, group_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        PADConfig(n_responses=3, batch_size=256)
    with pytest.raises(ValueError, match="tau"):
        PADConfig(tau=0.0)
    with pytest.raises(ValueError, match="student_init"):
        PADConfig(student_init="p_star")
    with pytest.raises(ValueError, match="align_iterations"):
        Comparison(align_iterations=0)


def test_pad_loss_vanishes_with_zero_gradient_when_student_is_teacher():
    teacher = fresh_student(3, seed=1, trials=[0, 1], n_settings=1, stage="t")
    student = teacher.trainable()
    x = teacher.sample(64, generators(1, "x", [0, 1]))
    for loss in ("ppd", "vpd"):
        value = pad_step_loss(student, teacher, x, PADConfig(loss=loss))
        if loss == "ppd":
            assert torch.allclose(value, torch.zeros(2), atol=1e-6)
            value.sum().backward()
            assert all(p.grad.abs().max().item() < 1e-5 for p in student.parameters())
        else:  # VPD: the NLL of the student's own most likely ranking is positive, not zero
            assert (value > 0).all()


def test_pad_pulls_a_student_onto_its_teacher():
    # Teacher: one narrow Gaussian at (1, −1). Student: one wide Gaussian at the origin. PAD sees only
    # rankings of the student's own samples by the two densities, and must move the student there.
    teacher = _mixture([0.0], [[1.0, -1.0]], [[0.25, 0.25]])
    student = _mixture([0.0], [[0.0, 0.0]], [[0.6, 0.6]])
    run = train(teacher, student, PADConfig(n_iterations=300), seed=0, trials=[0], checkpoints=[0])
    final = run.snapshots[300]
    assert torch.dist(final.means[0, 0], torch.tensor([1.0, -1.0])).item() < 0.1
    assert final.log_scales.exp().max().item() == pytest.approx(0.25, abs=0.06)
    assert run.loss_history[-20:].mean() < 0.2 * run.loss_history[:20].mean()
    assert torch.equal(run.snapshots[0].means, student.means)


def test_batched_rows_equal_lone_runs():
    teacher = fresh_student(3, seed=5, trials=[0, 1, 2], n_settings=1, stage="teacher")
    config = PADConfig(n_iterations=15, batch_size=64)
    students = fresh_student(2, seed=5, trials=[0, 1, 2], n_settings=1, stage="student")
    batched = train(teacher, students, config, seed=5, trials=[0, 1, 2]).snapshots[15]
    alone = train(teacher.rows([1]), fresh_student(2, 5, [1], 1, "student"), config, seed=5, trials=[1]).snapshots[15]
    for a, b in zip(batched.rows([1]).parameters(), alone.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_align_then_pad_student_shapes_and_p_low_start():
    setup = Setup(n_trials=2, sft_iterations=0, kd_iterations=0, n_low_recall=3)
    aligned = fresh_student(6, 0, [0, 1], 2, "aligned")  # 2 settings × 2 trials
    p_low = fresh_student(3, 0, [0, 1], 1, "p_low")
    run = align_then_pad(aligned, setup, PADConfig(n_iterations=2, student_init="p_low"), p_low, checkpoints=[0])
    assert run.snapshots[2].n_rows == 4 and run.snapshots[2].n_components == 3
    assert torch.equal(run.snapshots[0].means, p_low.repeat(2).means)
    with pytest.raises(ValueError, match="p_low"):
        align_then_pad(aligned, setup, PADConfig(student_init="p_low"))
    assert align_then_pad(aligned, setup, PADConfig(n_iterations=1)).snapshots[1].n_components == 3


def test_comparison_reuses_the_algorithm_chapters_models():
    setup = Setup(n_trials=2, sft_iterations=40, kd_iterations=40, eval_samples=500)
    comparison = Comparison(algorithm="grpo", align_iterations=5,
                            pad=(PADConfig(n_iterations=4), PADConfig(n_iterations=4, loss="vpd", student_init="p_low")),
                            pad_checkpoints=(2,))
    frame = run_comparison(comparison, setup)
    labels = {"p'", "p''", "K-A", "A (p'_AK)", "A-K", pad_label(comparison.pad[0]), pad_label(comparison.pad[1])}
    assert set(frame["pipeline"]) == labels
    assert len(frame) == 2 * (5 + 2 * 2)
    assert sorted(frame.loc[frame.pipeline == pad_label(comparison.pad[0]), "iterations"].unique()) == [2, 4]
    sweep = run_sweep(Sweep(algorithm="grpo", betas=(1.0,), checkpoints=(5,)), setup,
                      *_starts(setup))
    for pipeline in ("K-A", "A-K", "A (p'_AK)"):
        ours = frame[frame.pipeline == pipeline].sort_values("trial")["reward"].to_numpy()
        theirs = sweep[(sweep.pipeline == pipeline) & (sweep.panel == "beta")].sort_values("trial")["reward"].to_numpy()
        assert ours == pytest.approx(theirs, abs=1e-6)
    assert isinstance(frame, pd.DataFrame) and frame["algorithm"].eq("grpo").all()


def _starts(setup):
    from alignkd.mog.pipelines import high_recall, low_recall
    p_high = high_recall(setup)
    return p_high, low_recall(p_high, setup)
