"""Closed forms of the paper's §3: how a fixed reference model constrains preference alignment.

Every function works on tensors elementwise (broadcasting), so a figure sweeps a whole grid of
reference probabilities at once, and tests compare each closed form with torch autograd.

Notation (paper §3): π_θ the policy, π_ref the fixed reference, β > 0 the regularisation strength,
(y_w, y_l) a preference pair (winner, loser), R the reward.
"""

from __future__ import annotations

import torch

from . import objectives


def _check_beta(beta: float | torch.Tensor) -> None:
    if torch.any(torch.as_tensor(beta) <= 0):
        raise ValueError(f"beta must be > 0 (the KL/DPO coefficient of paper §3), got {beta}")


# --- DPO (paper §3.2, eq. 2, and the learning trap of §3.4) -----------------------------------------
# The objectives themselves live in `alignkd.objectives` (the code that trains); these wrappers add
# the β check a reader's sweep needs, so the chapter plots exactly the functions the testbeds train on.

def dpo_decomposition(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta):
    """(β·model log-ratio, β·reference log-ratio offset), the two parts of the DPO logit (eq. 2);
    see `objectives.dpo_decomposition`."""
    _check_beta(beta)
    return objectives.dpo_decomposition(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta)


def dpo_logit(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta):
    """z = β(Δ_θ + log π_ref(y_l)/π_ref(y_w)), the argument of the sigmoid in eq. 2."""
    _check_beta(beta)
    return objectives.dpo_logit(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta)


def dpo_loss(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta):
    """Per-pair DPO loss −log σ(z) (eq. 2)."""
    _check_beta(beta)
    return objectives.dpo_loss(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta)


def dpo_gradient_wrt_model_logratio(z, beta):
    """∂L_DPO/∂Δ_θ = −β σ(−z) (§3.4): it vanishes as the reference offset drives z ≫ 0."""
    _check_beta(beta)
    return objectives.dpo_gradient_wrt_model_logratio(z, beta)


# --- PPO / RLHF (paper §3.1, eq. 1 and eq. 3) -------------------------------------------------------

def shaped_reward(reward, policy_logp, ref_logp, beta):
    """r' = R − β log(π_θ(y)/π_ref(y)) (eq. 3), the reward PPO trains on; see `objectives.shaped_reward`."""
    _check_beta(beta)
    return objectives.shaped_reward(reward, policy_logp, ref_logp, beta)


def kl_penalty(policy_logp, ref_logp, beta):
    """The shaping term −β log(π_θ/π_ref) alone; → −∞ as π_ref(y*) → 0 (eq. 3)."""
    return shaped_reward(torch.zeros_like(torch.as_tensor(policy_logp)), policy_logp, ref_logp, beta)


# --- Reverse vs forward KL on a discrete space ------------------------------------------------------

def kl_divergence(p, q):
    """KL(p ‖ q) = Σ p log(p/q) along the last axis, with 0·log 0 = 0."""
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p))
    return terms.sum(-1)


def regularised_objective(policy, reward, reference, beta, direction: str = "reverse"):
    """E_π[R] − β·KL: `reverse` = KL(π ‖ π_ref) (eq. 1, mode-seeking), `forward` = KL(π_ref ‖ π) (covering)."""
    _check_beta(beta)
    expected_reward = (policy * reward).sum(-1)
    if direction == "reverse":
        return expected_reward - beta * kl_divergence(policy, reference)
    if direction == "forward":
        return expected_reward - beta * kl_divergence(reference, policy)
    raise ValueError(f"direction must be one of: reverse, forward (got {direction!r})")


def reverse_kl_optimum(reward, reference, beta):
    """argmax_π E_π[R] − β KL(π ‖ π_ref) = π_ref·exp(R/β) / Z: a mode π_ref lacks stays lacking."""
    _check_beta(beta)
    return torch.softmax(torch.log(torch.as_tensor(reference)) + torch.as_tensor(reward) / beta, dim=-1)


def forward_kl_optimum(reward, reference, beta, iterations: int = 200):
    """argmax_π E_π[R] − β KL(π_ref ‖ π).

    Stationarity gives π_i = β π_ref,i / (λ − R_i) with λ > max R fixed by Σ π = 1; Σ π is decreasing
    in λ, so λ is found by bisection (batched over leading axes). Unlike the reverse-KL optimum, the
    best response keeps mass of order 1 − β·(mass elsewhere) even when its π_ref → 0.
    """
    _check_beta(beta)
    reward = torch.as_tensor(reward, dtype=torch.float64)
    reference = torch.as_tensor(reference, dtype=torch.float64)
    beta = torch.as_tensor(beta, dtype=torch.float64)
    top = reward.max(-1, keepdim=True).values
    low = top + 1e-12  # Σπ → ∞ as λ → max R (if π_ref of the argmax > 0)
    high = top + beta * reference.sum(-1, keepdim=True) + 1.0  # Σπ ≤ β/(λ − max R) < 1 here
    for _ in range(iterations):
        middle = (low + high) / 2
        total = (beta[..., None] if beta.ndim else beta) * reference / (middle - reward)
        too_much = total.sum(-1, keepdim=True) > 1
        low = torch.where(too_much, middle, low)
        high = torch.where(too_much, high, middle)
    lam = (low + high) / 2
    policy = (beta[..., None] if beta.ndim else beta) * reference / (lam - reward)
    return policy / policy.sum(-1, keepdim=True)


def two_outcome_reference(target_mass):
    """A reference over {common response, rare good response} with the rare one at `target_mass`."""
    target_mass = torch.as_tensor(target_mass, dtype=torch.float64)
    return torch.stack([1 - target_mass, target_mass], dim=-1)

