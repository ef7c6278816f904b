"""Ground truth, mixture densities, sampling, KD sharpening and the metrics against closed forms."""

import math

import pytest
import torch

from alignkd.mog import groundtruth as gt
from alignkd.mog.kd import KDConfig, sharpen_weights
from alignkd.mog.metrics import evaluate
from alignkd.mog.mixture import Mixture, generators, standard_normal, uniforms

STEP = 0.02
GRID = torch.stack(torch.meshgrid(torch.arange(-4.5, 4.5, STEP), torch.arange(-4.5, 4.5, STEP), indexing="ij"), -1)
POINTS = GRID.reshape(-1, 2).double()


def integral(log_density):
    return float(torch.exp(log_density).sum() * STEP * STEP)


def p_star_as_mixture() -> Mixture:
    """p* written as a `Mixture` row: 8 equal components at the mode centres, σ = √0.05."""
    return Mixture(torch.zeros(1, 8), gt.MODE_CENTERS.clone()[None],
                   torch.full((1, 8, 2), 0.5 * math.log(gt.VARIANCE)))


def test_mode_numbering_matches_the_paper():
    assert gt.MODE_CENTERS.shape == (8, 2)
    assert gt.MODE_CENTERS[7].tolist() == [1.5, -1.5]  # the single target (App. A.1)
    assert gt.MODE_CENTERS[6].tolist() == [0.0, -1.5]  # its left neighbour (App. B.4)
    assert gt.MODE_CENTERS[0].tolist() == [-1.5, 1.5]  # top-left
    assert [0.0, 0.0] not in gt.MODE_CENTERS.tolist()


@pytest.mark.parametrize("name", ["p_star", "target", "multi_target"])
def test_exact_densities_integrate_to_one(name):
    log_density = {"p_star": lambda x: gt.log_p_star(x), "target": lambda x: gt.log_p_target(x, (7,)),
                   "multi_target": lambda x: gt.log_p_target(x, (7, 6))}[name]
    assert integral(log_density(POINTS)) == pytest.approx(1.0, abs=1e-6)


def test_p_star_density_value_at_a_mode_centre():
    # At a centre the own mode contributes 1/(2π·0.05)/8; the others are ≥ 1.5 away (e^{-22.5}).
    expected = math.log(1 / (2 * math.pi * 0.05) / 8)
    assert gt.log_p_star(gt.MODE_CENTERS[3]).item() == pytest.approx(expected, abs=1e-6)


def test_mixture_density_integrates_to_one_and_matches_direct_formula():
    gens = generators(3, "test", range(3))
    m = Mixture.random_init(5, gens, scale=0.4)
    m.logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    m.log_scales = m.log_scales + 0.3 * torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(2))
    x = POINTS.float().unsqueeze(0).expand(3, -1, -1)
    logq = m.log_prob(x)
    for b in range(3):
        assert integral(logq[b].double()) == pytest.approx(1.0, abs=1e-3)
    # the matmul form equals the broadcast formula up to float32 rounding
    assert torch.allclose(logq, m.log_prob_direct(x), atol=2e-4)


def test_reward_closed_form_and_multi_target_max():
    c7, c6 = gt.MODE_CENTERS[7], gt.MODE_CENTERS[6]
    assert gt.reward(c7).item() == pytest.approx(10.0)
    assert gt.reward(c7 + torch.tensor([0.0, 1.0])).item() == pytest.approx(10 * math.exp(-2.0), rel=1e-6)
    assert gt.reward(c6, (7,)).item() == pytest.approx(10 * math.exp(-2 * 2.25), rel=1e-5)
    assert gt.reward(c6, (7, 6)).item() == pytest.approx(10.0)


def test_p_star_samples_have_the_closed_form_moments():
    x = gt.sample_p_star(uniforms(generators(0, "moments", [0]), 200_000, 3))[0].double()
    # mean 0; per-axis variance 0.05 + mean of the squared centre coordinates (6·1.5²/8 = 1.6875)
    assert x.mean(0).abs().max().item() < 0.01
    assert x.var(0).tolist() == pytest.approx([1.7375, 1.7375], abs=0.02)


def test_mixture_samples_follow_the_weights_and_components():
    m = Mixture(torch.log(torch.tensor([[0.7, 0.2, 0.1]])), torch.tensor([[[-3.0, 0.0], [0.0, 0.0], [3.0, 3.0]]]),
                torch.log(torch.tensor([[[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]])))
    x = m.sample(100_000, generators(0, "w", [0]))[0]
    frac_left = (x[:, 0] < -1.5).float().mean().item()
    frac_top = (x[:, 1] > 1.5).float().mean().item()
    assert frac_left == pytest.approx(0.7, abs=0.005)
    assert frac_top == pytest.approx(0.1, abs=0.005)
    assert x[x[:, 1] > 1.5].std(0).tolist() == pytest.approx([0.3, 0.3], abs=0.01)


def test_standard_normal_is_the_normal_quantile_function():
    u = torch.tensor([1e-4, 0.025, 0.5, 0.8413447, 0.975, 1 - 1e-4])
    assert torch.allclose(standard_normal(u), torch.special.ndtri(u.double()).float(), atol=2e-4)
    assert standard_normal(u)[2].item() == 0.0 and standard_normal(u)[4].item() == pytest.approx(1.959964, abs=1e-4)
    # float32 rounding of 2u − 1 costs accuracy only beyond 5σ (u < 3e-7), where draws are clamped anyway
    tails = torch.tensor([0.0, 1e-9, 1.0])
    assert torch.allclose(standard_normal(tails), torch.special.ndtri(torch.tensor([1e-7, 1e-7, 1 - 1e-7]).double()).float(),
                          rtol=0.01)


def test_component_choice_is_the_inverse_cdf_of_the_weights():
    weights = torch.tensor([[0.2, 0.3, 0.5]])
    m = Mixture(torch.log(weights), torch.tensor([[[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]]]), torch.full((1, 3, 2), -5.0))
    u = torch.tensor([[[0.1, 0.5, 0.5], [0.2001, 0.5, 0.5], [0.49, 0.5, 0.5], [0.51, 0.5, 0.5], [0.999, 0.5, 0.5]]])
    assert m.sample_from_uniforms(u)[0, :, 0].tolist() == pytest.approx([0.0, 10.0, 10.0, 20.0, 20.0], abs=1e-4)


def test_kd_sharpening_matches_the_closed_form():
    w = torch.tensor([0.5, 0.3, 0.2])
    expected = torch.tensor([0.25, 0.09, 0.04]) / 0.38  # α² / Σ α² for β_KD = 2
    assert torch.allclose(sharpen_weights(w, 2.0), expected, atol=1e-6)
    assert torch.allclose(sharpen_weights(w, 1.0), w, atol=1e-6)
    assert sharpen_weights(w, 10.0)[0].item() == pytest.approx(1 / (1 + 0.6 ** 10 + 0.4 ** 10), rel=1e-5)
    m = Mixture(torch.log(w)[None] + 3.0, torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))  # logits up to a constant
    assert torch.allclose(m.sharpened(2.0).weights()[0], expected, atol=1e-6)


def test_metrics_of_p_star_itself_equal_its_negative_entropy():
    q = p_star_as_mixture()
    metrics = evaluate(q, (7,), seed=0, trials=[0], n_samples=20_000).iloc[0]
    # E_{p*} log p* by quadrature on the grid
    logp = gt.log_p_star(POINTS)
    neg_entropy = float((torch.exp(logp) * logp).sum() * STEP * STEP)
    assert metrics.overall_precision == pytest.approx(neg_entropy, abs=0.02)
    assert metrics.overall_recall == pytest.approx(neg_entropy, abs=0.02)
    # the target Gaussian alone: E log p_target = −log(2π·0.05) − 1
    target = Mixture(torch.zeros(1, 1), gt.MODE_CENTERS[7].reshape(1, 1, 2), torch.full((1, 1, 2), 0.5 * math.log(0.05)))
    tp = evaluate(target, (7,), seed=0, trials=[0], n_samples=20_000).iloc[0]
    assert tp.target_precision == pytest.approx(-math.log(2 * math.pi * 0.05) - 1, abs=0.02)
    # E exp(−α‖x − c‖²) over N(c, σ²I) in d = 2 is 1 / (1 + 2ασ²): 10 / (1 + 4·0.05)
    assert tp.reward == pytest.approx(10 / (1 + 4 * 0.05), abs=0.03)


def test_bad_parameters_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="unknown target mode 8"):
        gt.check_targets((8,))
    with pytest.raises(ValueError, match="beta_kd"):
        KDConfig(beta_kd=0.0)
    with pytest.raises(ValueError, match="n_components = 9"):
        KDConfig(n_components=9)


def test_streams_hand_out_exactly_the_step_by_step_numbers():
    # several steps are drawn per call and served one by one, also across a change of shape mid-buffer
    streams = generators(0, "streams", range(5))
    plain = [torch.Generator().manual_seed(g.initial_seed()) for g in streams]
    for shape in [(7, 3)] * 10 + [(2,)] + [(7, 3)] * 40 + [(4, 2)] * 3:
        expected = torch.stack([torch.rand(shape, generator=g) for g in plain])
        assert torch.equal(uniforms(streams, *shape), expected)
