"""The closed forms of alignkd.theory against autograd or an independent computation (the objectives
they wrap are tested in test_objectives.py)."""

import math

import pytest
import torch

from alignkd import theory


pytestmark = pytest.mark.usefixtures("double_precision")


def test_dpo_gradient_saturates_as_reference_loses_the_winner():
    ref_w = torch.logspace(-1, -12, 12)
    z = theory.dpo_logit(torch.zeros(12), torch.zeros(12), torch.log(ref_w), torch.log(torch.tensor(0.3)), 1.0)
    gradient = theory.dpo_gradient_wrt_model_logratio(z, 1.0).abs()
    assert torch.all(gradient[1:] < gradient[:-1])
    # with Δθ = 0, σ(−z) = π_ref(y_w) / (π_ref(y_w) + π_ref(y_l)) exactly
    assert torch.allclose(gradient, ref_w / (ref_w + 0.3))


def test_kl_penalty_diverges_as_reference_mass_vanishes():
    ref = torch.tensor([1e-1, 1e-4, 1e-8, 1e-16])
    penalty = theory.kl_penalty(torch.log(torch.tensor(0.05)), torch.log(ref), 0.7)
    assert torch.all(penalty[1:] < penalty[:-1])
    assert penalty[-1].item() == pytest.approx(-0.7 * math.log(0.05 / 1e-16))


def test_kl_divergence_matches_torch_distributions():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    q = torch.tensor([[0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]])
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(p), torch.distributions.Categorical(q))
    assert torch.allclose(theory.kl_divergence(p, q), expected)


def _optimise(reward, reference, beta, direction, steps=4000):
    logits = torch.zeros_like(reference, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = -theory.regularised_objective(torch.softmax(logits, -1), reward, reference, beta, direction)
        loss.backward()
        optimiser.step()
    return torch.softmax(logits, -1).detach()


@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_closed_form_optima_match_gradient_ascent(direction):
    reference = torch.tensor([0.6, 0.3, 0.08, 0.02])
    reward = torch.tensor([0.0, 0.5, 1.0, 2.0])
    beta = 0.8
    closed = (theory.reverse_kl_optimum if direction == "reverse" else theory.forward_kl_optimum)(reward, reference, beta)
    assert torch.allclose(closed, _optimise(reward, reference, beta, direction), atol=2e-3)
    best = theory.regularised_objective(closed, reward, reference, beta, direction)
    for other in (reference, torch.softmax(torch.randn(4, generator=torch.Generator().manual_seed(0)), -1)):
        assert best >= theory.regularised_objective(other, reward, reference, beta, direction)


def test_forward_kl_optimum_keeps_the_rare_mode_reverse_loses_it():
    reference = theory.two_outcome_reference(torch.tensor([1e-2, 1e-4, 1e-8]))
    reward = torch.tensor([0.0, 1.0])
    reverse = theory.reverse_kl_optimum(reward, reference, 0.5)[:, 1]
    forward = theory.forward_kl_optimum(reward, reference, 0.5)[:, 1]
    assert reverse[-1] < 1e-6  # π_ref·e^{R/β}: e^2 cannot rescue a 1e-8 mode
    assert torch.all(forward > 0.45)  # → 1 − β as π_ref(y*) → 0


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="beta must be > 0"):
        theory.shaped_reward(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0), 0.0)
    with pytest.raises(ValueError, match="direction must be one of"):
        theory.regularised_objective(torch.ones(2) / 2, torch.ones(2), torch.ones(2) / 2, 1.0, "sideways")


def test_dpo_gradient_table_rows_are_the_closed_form():
    table = theory.dpo_gradient_table(torch.tensor([0.1, 1e-6]), [0.5, 2.0], [0.3])
    assert len(table) == 4 and list(table.columns) == ["π_ref(y_w)", "|∂L/∂Δθ|", "z", "β", "π_ref(y_l)"]
    row = table[(table["β"] == 2.0) & (table["π_ref(y_w)"] == 1e-6)].iloc[0]
    z = 2.0 * math.log(0.3 / 1e-6)  # Δθ = 0: z is the reference offset alone
    assert row["z"] == pytest.approx(z) and row["|∂L/∂Δθ|"] == pytest.approx(2.0 / (1 + math.exp(z)))


def test_closed_form_claims_hold_on_the_chapters_grid_and_fail_on_a_mild_one():
    rows = theory.closed_form_claims(torch.logspace(-1, -12, 50), 0.7, 0.3, 0.05, 10.0)
    assert [r["claim_id"] for r in rows] == ["dpo-gradient-vanishes", "shaped-reward-negative",
                                             "reverse-kl-keeps-lost-mode-lost"]
    assert all(r["verdict"] == "holds" for r in rows)
    # Δθ = 0: |∂L/∂Δθ| = β σ(−z) = β / (1 + (π_ref(y_l)/π_ref(y_w))^β)
    assert rows[0]["ours"] == pytest.approx((1 + 3 ** 0.7) / (1 + (0.3 / 1e-12) ** 0.7), rel=1e-6)
    assert rows[1]["ours"] == pytest.approx(10.0 - 0.7 * math.log(0.05 / 1e-12))
    # a grid that stops at π_ref = 1e-2 neither saturates DPO at β = 0.7 nor cancels the reward
    mild = theory.closed_form_claims(torch.logspace(-1, -2, 5), 0.7, 0.3, 0.05, 10.0)
    assert [r["verdict"] for r in mild[:2]] == ["does not hold", "does not hold"]
    assert all(r["reason"] for r in mild[:2])
