"""Target coverage of a model (the premise of the trap), the geometry parameter, and their validation."""

import math

import pytest
import torch

from alignkd.mog import groundtruth as gt
from alignkd.mog.coverage import LOST_SHARE, coverage_summary, target_coverage
from alignkd.mog.geometry import p_star_target_precision
from alignkd.mog.mixture import Mixture
from alignkd.mog.pipelines import Setup

STEP = 0.02


def p_star_as_mixture(spacing: float = gt.MODE_SPACING) -> Mixture:
    return Mixture(torch.zeros(1, 8), gt.mode_centers(spacing)[None], torch.full((1, 8, 2), 0.5 * math.log(gt.VARIANCE)))


def grid(spacing: float) -> torch.Tensor:
    half = spacing + 1.5  # 6.7σ beyond the outer modes
    axis = torch.arange(-half, half, STEP, dtype=torch.float64)
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)


@pytest.mark.parametrize("spacing", [0.5, 1.0, 1.5, 2.5])
def test_densities_integrate_to_one_at_any_spacing(spacing):
    x = grid(spacing)
    for log_density in (gt.log_p_star(x, spacing), gt.log_p_target(x, (7,), spacing),
                        gt.log_p_target(x, (7, 6), spacing)):
        assert float(torch.exp(log_density).sum() * STEP * STEP) == pytest.approx(1.0, abs=1e-6)


def test_spacing_scales_the_grid_and_keeps_the_numbering():
    assert gt.mode_centers(1.0)[7].tolist() == [1.0, -1.0]
    assert torch.equal(gt.mode_centers(1.5), gt.MODE_CENTERS)
    # E_{p*}[log p_target] by quadrature: the spacing-1.0 value is the paper's Figure 1 p' number (−34.78)
    x = grid(1.0)
    logp = gt.log_p_star(x, 1.0)
    expected = float((torch.exp(logp) * gt.log_p_target(x, (7,), 1.0)).sum() * STEP * STEP)
    assert expected == pytest.approx(-34.84, abs=0.05)


def test_coverage_of_p_star_is_one_eighth_per_mode():
    q = p_star_as_mixture()
    cov = target_coverage(q, (7,), seed=0, trials=[0], n_samples=40_000).iloc[0]
    assert cov.target_share == pytest.approx(1 / 8, abs=0.006)  # MC std ≈ 0.0017
    assert not cov.lost
    # exact density at the centre: its own mode's peak / 8 (the others are ≥ 1.5 away: e^{-22.5})
    assert cov.log_density_at_target == pytest.approx(math.log(1 / (2 * math.pi * 0.05) / 8), abs=1e-5)
    both = target_coverage(q, (7, 6), seed=0, trials=[0], n_samples=40_000).iloc[0]
    assert both.target_share == pytest.approx(2 / 8, abs=0.01)
    assert both.least_target_share == pytest.approx(1 / 8, abs=0.006)


def test_coverage_is_zero_without_a_component_near_the_target():
    # two rows (= two trials): one mixture on modes 0..5, one with a component on the target
    centers = gt.MODE_CENTERS
    log_scale = torch.full((2, 3, 2), 0.5 * math.log(gt.VARIANCE))
    means = torch.stack([centers[[0, 1, 2]], centers[[0, 3, 7]]])
    q = Mixture(torch.zeros(2, 3), means, log_scale)
    cov = target_coverage(q, (7,), seed=1, trials=[0, 1], n_samples=20_000)
    assert cov.target_share[0] < 1e-3 and cov.lost[0]
    assert cov.log_density_at_target[0] < -50  # the nearest component is 3 away: ‖Δ‖²/(2·0.05) = 90
    assert cov.target_share[1] == pytest.approx(1 / 3, abs=0.01) and not cov.lost[1]
    summary = coverage_summary(cov.assign(model="q"))
    assert summary.loc["q", "lost (share < 1 %)"] == 1 and summary.loc["q", "trials"] == 2
    assert LOST_SHARE == 0.01


def test_coverage_is_batched_over_rows_and_reproducible():
    q = p_star_as_mixture().repeat(3)
    a = target_coverage(q, (7,), seed=2, trials=[0, 1, 2], n_samples=2000)
    b = target_coverage(q.rows([1]), (7,), seed=2, trials=[1], n_samples=2000)
    assert a.target_share[1] == b.target_share[0]  # a row alone = its row of the batch (its own stream)
    assert a.target_share.nunique() > 1


def test_bad_geometry_and_kd_parameters_name_the_field():
    with pytest.raises(ValueError, match=r"Setup.mode_spacing = 0.0: must be a finite number > 0"):
        Setup(mode_spacing=0.0)
    with pytest.raises(ValueError, match=r"Setup.mode_spacing = -1.0"):
        Setup(mode_spacing=-1.0)
    with pytest.raises(ValueError, match=r"Setup.beta_kd = 0.0: must be a number > 0"):
        Setup(beta_kd=0.0)
    with pytest.raises(ValueError, match=r"mode_spacing = 1.0: the alignment algorithms reward the target"):
        Setup(mode_spacing=1.0).check_alignable()
    with pytest.raises(ValueError, match="mode_spacing"):
        gt.mode_centers(float("nan"))


def test_p_star_target_precision_depends_on_the_grid():
    assert p_star_target_precision(1.0) == pytest.approx(-34.84, abs=0.01)  # the paper's Figure 1 p': −34.78
    assert p_star_target_precision(1.5) == pytest.approx(-78.59, abs=0.01)
