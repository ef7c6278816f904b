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



# --- Tables and claim checks of the theory chapter ------------------------------------------------

def dpo_gradient_table(reference_mass, betas, loser_masses):
    """|∂L_DPO/∂Δ_θ| at Δ_θ = 0 for every π_ref(y_w) in `reference_mass`, β and π_ref(y_l): one row each.

    Columns: π_ref(y_w), |∂L/∂Δθ|, z, β, π_ref(y_l)."""
    import pandas as pd

    reference_mass = torch.as_tensor(reference_mass, dtype=torch.float64)
    zero = torch.zeros_like(reference_mass)
    frames = []
    for beta in betas:
        for loser_mass in loser_masses:
            z = dpo_logit(zero, zero, torch.log(reference_mass), torch.log(torch.tensor(loser_mass, dtype=torch.float64)),
                          beta)
            gradient = dpo_gradient_wrt_model_logratio(z, beta)
            frames.append(pd.DataFrame({"π_ref(y_w)": reference_mass.numpy(), "|∂L/∂Δθ|": gradient.abs().numpy(),
                                        "z": z.numpy(), "β": beta, "π_ref(y_l)": loser_mass}))
    return pd.concat(frames, ignore_index=True)


def closed_form_claims(reference_mass, beta, loser_mass, policy_target_mass, reward_of_target) -> list[dict]:
    """The three claims of §3 the theory chapter checks, at one β, as `alignkd.claims.record` keyword rows.

    Each verdict follows from the closed forms at the grid's end points (largest and smallest π_ref(y*)):
    the DPO gradient falls by more than 100× (§3.4); the shaped reward of y* turns negative (eq. 3); the
    reverse-KL optimum keeps less than 1 % of the largest-mass optimum on y* while the forward-KL optimum
    keeps more than 10 % (the two KL forms the experiments compare)."""
    reference_mass = torch.as_tensor(reference_mass, dtype=torch.float64)
    ends = torch.stack([reference_mass.max(), reference_mass.min()])
    smallest = f"π_ref(y*) = {float(ends[1]):.0e}"
    zero = torch.zeros(2, dtype=torch.float64)
    loser = torch.log(torch.tensor(loser_mass, dtype=torch.float64))
    gradient = dpo_gradient_wrt_model_logratio(dpo_logit(zero, zero, torch.log(ends), loser, beta), beta).abs()
    dpo_ratio = float(gradient[1] / gradient[0])
    shaped = float(shaped_reward(torch.tensor(reward_of_target, dtype=torch.float64),
                                 torch.log(torch.tensor(policy_target_mass, dtype=torch.float64)), torch.log(ends[1]), beta))
    reference = two_outcome_reference(ends)
    reward = torch.tensor([0.0, 1.0], dtype=torch.float64)
    reverse = reverse_kl_optimum(reward, reference, beta)[:, 1]
    forward = float(forward_kl_optimum(reward, reference, beta)[1, 1])
    reverse_kept = float(reverse[1] / reverse[0])

    def verdict(holds: bool, reason: str) -> dict:
        return {"verdict": "holds" if holds else "does not hold", "reason": "" if holds else reason}

    return [
        dict(claim_id="dpo-gradient-vanishes", figure="fig-01-dpo-gradient", ours=dpo_ratio,
             claim=f"DPO's gradient on a pair whose winner the reference has lost vanishes (β = {beta:g}): "
                   f"|∂L/∂Δθ| at {smallest} over its value at π_ref(y*) = {float(ends[0]):.0e}",
             paper_value="→ 0 as π_ref(y_w) → 0 (§3.4)",
             **verdict(dpo_ratio < 1e-2, f"the gradient falls only {1 / dpo_ratio:.3g}×, not 100×")),
        dict(claim_id="shaped-reward-negative", figure="fig-01-shaped-reward", ours=shaped,
             claim=f"The KL-shaped reward of the rare good response turns into a penalty (β = {beta:g}, "
                   f"R = {reward_of_target:g}, π_θ(y*) = {policy_target_mass:g}): r'(y*) at {smallest}",
             paper_value="→ −∞ as π_ref(y*) → 0 (eq. 3)",
             **verdict(shaped < 0, f"r'(y*) is still {shaped:.3g} > 0 at the grid's smallest reference mass")),
        dict(claim_id="reverse-kl-keeps-lost-mode-lost", figure="fig-01-kl-optima", ours=reverse_kept,
             claim=f"The reverse-KL optimum inherits a mode the reference lacks, the forward-KL optimum does not "
                   f"(β = {beta:g}): reverse π*(y*) at {smallest} over its value at the largest π_ref(y*) "
                   f"(forward π*(y*) there: {forward:.3g})",
             paper_value="π* ∝ π_ref·e^{R/β} (§3.3)",
             **verdict(reverse_kept < 1e-2 and forward > 0.1,
                       f"reverse keeps {reverse_kept:.3g} of its mass, forward π*(y*) = {forward:.3g}")),
    ]
