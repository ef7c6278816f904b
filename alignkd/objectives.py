"""The objectives every alignment run trains on, written once for the theory chapter, MoG and LM.

Each function is elementwise over any leading dimensions (trials × samples in MoG, batch × tokens in
LM) and leaves the reduction to the caller, except where the objective itself is a reduction
(advantages, whitening). Nothing here validates its inputs: the configs do that once, before the hot
loop; `alignkd.theory` wraps the closed forms with checks for the theory chapter.

Notation (paper §3): π_θ the policy, π_old the policy that drew the samples, π_ref the fixed
reference, β > 0 the KL/DPO coefficient, (y_w, y_l) a preference pair (winner, loser), R the reward.
All probabilities enter as log-probabilities.

    DPO (eq. 2)          dpo_decomposition, dpo_logit, dpo_loss, dpo_implicit_reward,
                         dpo_gradient_wrt_model_logratio
    KTO (§3.4; Ethayarajh et al. 2024, eq. 7)
                         kto_reference_point, kto_loss (keeps π_ref: the offset enters through r)
    SimPO (Meng et al. 2024, eq. 6)
                         simpo_loss (reference-free: no π_ref anywhere)
    PPO reward (eq. 3)   shaped_reward
    KL estimators        k1, k2, k3 (Schulman, "Approximating KL divergence", 2020)
    advantages           group_advantages (GRPO; batch-mean when the group is the whole batch), whiten
    losses               policy_loss (clipped ratio), value_loss (optionally clipped), masked_mean
"""

from __future__ import annotations

import torch
from torch.nn.functional import logsigmoid

# --- DPO (paper §3.2, eq. 2; the learning trap of §3.4) ---------------------------------------------


def dpo_decomposition(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta):
    """The two additive parts of the DPO logit z of eq. 2: (β·Δ_θ, β·log π_ref(y_l)/π_ref(y_w)).

    The model log-ratio Δ_θ = log π_θ(y_w)/π_θ(y_l) is what training moves; the reference offset is a
    per-pair constant fixed by π_ref alone, which saturates the sigmoid when π_ref(y_w) → 0.
    """
    return beta * (policy_logp_w - policy_logp_l), beta * (ref_logp_l - ref_logp_w)


def dpo_logit(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta):
    """z = β[(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))] (eq. 2).

    Equal to the sum of `dpo_decomposition`'s two parts; computed in this order because it is the
    order the training loops always used (same seed, same bits)."""
    return beta * ((policy_logp_w - ref_logp_w) - (policy_logp_l - ref_logp_l))


def dpo_loss(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta):
    """Per-pair DPO loss −log σ(z) of eq. 2 (TRL's `loss_type="sigmoid"`)."""
    return -logsigmoid(dpo_logit(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta))


def dpo_implicit_reward(policy_logp, ref_logp, beta):
    """β·log π_θ(y)/π_ref(y): DPO's implicit reward, the `rewards/chosen|rejected` TRL logs (App. C.4)."""
    return beta * (policy_logp - ref_logp)


def dpo_gradient_wrt_model_logratio(z, beta):
    """∂L_DPO/∂Δ_θ = −β σ(−z) (§3.4): it vanishes as the reference offset drives z ≫ 0."""
    return -beta * torch.sigmoid(-z)


# --- KTO (paper §3.4: the trap "persists in DPO-style objectives like KTO"; Ethayarajh et al. 2024) -----


def kto_reference_point(policy_logp, ref_logp, dim=None, keepdim: bool = False):
    """z_ref = max(0, mean(log π_θ(y) − log π_ref(y))), detached: KTO's reference point (eq. 7's z_0).

    The batch estimate of KL(π_θ ‖ π_ref) on samples of the current policy, as TRL 1.16's `KTOTrainer`
    computes its `kl` from the "mismatched" KL completions (`(KL_logps − ref_KL_logps).mean().detach()`,
    then `.clamp(min=0)`); with one prompt those completions are simply other samples of π_θ. The mean is
    over `dim` (all elements if None; MoG takes it per trial row, `dim=-1, keepdim=True`). Detached
    because KTO does not backpropagate through z_ref (the paper: "for ... stability").
    """
    logratio = (policy_logp - ref_logp).detach()
    mean = logratio.mean() if dim is None else logratio.mean(dim, keepdim=keepdim)
    return mean.clamp(min=0)


def kto_loss(policy_logp, ref_logp, desirable, reference_point, beta, desirable_weight=1.0,
             undesirable_weight=1.0):
    """Per-example KTO loss (Ethayarajh et al. 2024, eq. 7; TRL 1.16's `loss_type="kto"`):

        desirable y:    λ_D · (1 − σ(β (r − z_ref)))
        undesirable y:  λ_U · (1 − σ(β (z_ref − r))),     r = log π_θ(y) − log π_ref(y),

    `desirable` a bool tensor broadcastable to the log-probs (sequence log-probs are sums over tokens, as
    TRL). TRL's trainer returns the mean of these over the batch. The reference enters only through r: a
    desirable y with π_ref(y) ≈ 0 has r ≫ z_ref, the sigmoid saturates and its gradient −λ_D β σ(1 − σ)
    vanishes, the same offset-induced saturation as DPO's (§3.4).
    """
    logratio = policy_logp - ref_logp
    # written as TRL writes them (weight · (1 − σ(·))), so that the pinned test agrees to the last bit
    desirable_loss = desirable_weight * (1 - torch.sigmoid(beta * (logratio - reference_point)))
    undesirable_loss = undesirable_weight * (1 - torch.sigmoid(beta * (reference_point - logratio)))
    return torch.where(desirable, desirable_loss, undesirable_loss)


# --- SimPO (reference-free; Meng et al. 2024, eq. 6; TRL's CPO `loss_type="simpo"`) ---------------------


def simpo_loss(policy_avg_logp_w, policy_avg_logp_l, beta, gamma):
    """Per-pair SimPO loss −log σ(β (avg_w − avg_l) − γ) (Meng et al. 2024, eq. 6).

    avg = (1/|y|) log π_θ(y), the length-normalised (per-token average) log-likelihood; γ > 0 the target
    margin (TRL: `simpo_gamma`). No reference model appears: nothing fixes an offset, so the saturation
    of §3.4 has nothing to come from. Written as TRL 1.16's `CPOTrainer.cpo_loss` writes it, β (Δ − γ/β)
    (label smoothing 0; `cpo_alpha = 0` drops CPO's NLL term, which makes it SimPO).
    """
    return -logsigmoid(beta * ((policy_avg_logp_w - policy_avg_logp_l) - gamma / beta))


# --- PPO / RLHF reward (paper §3.1, eq. 1 and eq. 3) ------------------------------------------------


def shaped_reward(reward, logp_old, logp_ref, beta):
    """r' = R − β (log π_old(y) − log π_ref(y)) (eq. 3): the KL-shaped reward whose expectation is
    eq. 1's objective; → −∞ where π_ref(y) → 0, the learning trap of a low-recall reference."""
    return reward - beta * (logp_old - logp_ref)


# --- KL(π ‖ π_ref) estimators on samples of π (Schulman 2020) -----------------------------------------


def k1(logp, logp_ref):
    """log π − log π_ref: unbiased, can be negative; its mean over samples of π is KL(π ‖ π_ref)."""
    return logp - logp_ref


def k2(logp, logp_ref):
    """½ (log π − log π_ref)²: biased, ≥ 0, low variance; its gradient is that of KL to second order."""
    return 0.5 * (logp - logp_ref) ** 2


def k3(logp, logp_ref):
    """π_ref/π − log(π_ref/π) − 1: unbiased and ≥ 0 (DeepSeekMath's GRPO penalty).

    Differentiated on samples of π_θ (the KL term *in the loss*), its expected gradient is that of the
    forward KL(π_ref ‖ π_θ), not of the reverse KL that eq. 3 folds into the reward (SPEC §3–4)."""
    log_ratio = logp_ref - logp
    return torch.exp(log_ratio) - log_ratio - 1


# --- Advantages --------------------------------------------------------------------------------------


def group_advantages(rewards, group_size: int | None = None, scale: bool = False, eps: float = 1e-4):
    """GRPO advantages A_i = R_i − mean_group(R), optionally / (std_group(R) + eps), along the last axis.

    Consecutive runs of `group_size` entries form a group; `None` makes the whole last axis one group:
    the batch-mean baseline of App. A.2 ("reward − batch-mean reward"). `scale` is DeepSeekMath's and
    TRL's `scale_rewards="group"` (unbiased std, eps 1e-4 as TRL)."""
    grouped = rewards if group_size is None else rewards.unflatten(-1, (-1, group_size))
    advantages = grouped - grouped.mean(-1, keepdim=True)
    if scale:
        advantages = advantages / (grouped.std(-1, keepdim=True) + eps)
    return advantages if group_size is None else advantages.flatten(-2)


def masked_mean(values, mask=None, dim=None, keepdim: bool = False):
    """Mean of `values` over `dim` (all dims if None), counting only entries where `mask` is 1."""
    if mask is None:
        return values.mean() if dim is None else values.mean(dim, keepdim=keepdim)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim, keepdim=keepdim) / mask.sum(dim, keepdim=keepdim).clamp(min=1)


def whiten(values, mask=None, dim=None, shift_mean: bool = True, eps: float = 1e-8):
    """(x − mean) / sqrt(var + eps) over `dim` (all dims if None) and the entries where `mask` is 1.

    The variance is unbiased, as TRL's `masked_whiten`. `shift_mean=False` only rescales: a learned
    baseline V that is constant over `dim` survives it, whereas subtracting the batch mean would
    replace V by that mean (see `alignkd.mog.ppo`)."""
    weights = torch.ones_like(values) if mask is None else mask
    dims = tuple(range(values.ndim)) if dim is None else (dim,)
    count = weights.sum(dims, keepdim=True)
    mean = (values * weights).sum(dims, keepdim=True) / count.clamp(min=1)
    variance = (((values - mean) ** 2) * weights).sum(dims, keepdim=True) / (count - 1).clamp(min=1)
    scaled = (values - mean if shift_mean else values) * torch.rsqrt(variance + eps)
    return scaled if mask is None else scaled * mask


# --- PPO-style losses (Schulman et al. 2017; TRL's PPOTrainer and GRPOTrainer) ------------------------


def policy_loss(logp, logp_old, advantages, epsilon: float | None = None):
    """max(−ρA, −clip(ρ, 1 − ε, 1 + ε)A) with ρ = π_θ/π_old, elementwise (−ρA when ε is None).

    With a single update per sampled batch ρ ≡ 1 in value, the clip never binds and ε may be None:
    its gradient is then the plain policy gradient −A ∇log π_θ."""
    ratio = torch.exp(logp - logp_old)
    unclipped = -advantages * ratio
    if epsilon is None:
        return unclipped
    return torch.maximum(unclipped, -advantages * torch.clamp(ratio, 1 - epsilon, 1 + epsilon))


def value_loss(values, returns, old_values=None, epsilon_value: float | None = None):
    """½ (V − G)², or with `old_values` and `epsilon_value` ½ max((V − G)², (clip(V, V_old ± ε_v) − G)²)
    (TRL 0.9.6's clipped value loss), elementwise."""
    squared = (values - returns) ** 2
    if old_values is None or epsilon_value is None:
        return 0.5 * squared
    clipped = old_values + (values - old_values).clamp(-epsilon_value, epsilon_value)
    return 0.5 * torch.maximum(squared, (clipped - returns) ** 2)
