"""GRPO: critic-free policy gradient with a batch-mean baseline and a KL anchor (App. A.2, B.1).

Each iteration samples `batch_size` points from the current policy (one "group" per row), takes the
advantage A = R − mean(R) over the group (App. A.2: "the difference between an individual sample's
reward and this batch-mean-reward") and one Adam step. The KL to the reference takes one of two
forms (`kl_form`, the names of `alignkd.lm.grpo`; SPEC §3 asks for both):

- "k3" (GRPO as published, DeepSeekMath and TRL): the penalty is in the loss,

      −mean(ρ A) + β · mean(k3),   ρ = π_θ/π_old (= 1 in value, its gradient is ∇log π_θ),
      k3 = π_ref/π_θ − log(π_ref/π_θ) − 1.

  Differentiated on samples of π_θ its expected gradient is that of the *forward* KL(π_ref ‖ π_θ),
  whose optimum keeps a target the reference has lost (a weaker trap than PPO's).
- "reward": the KL is folded into the reward as PPO does (eq. 3), R' = R − β (log π_old − log π_ref),
  and A = R' − mean(R'): REINFORCE on E[R] − β·KL(π_θ ‖ π_ref), the *reverse* KL of §3.4, whose
  optimum π_ref·e^{R/β} inherits the reference's missing modes. Registered as `grpo_reward`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import objectives
from ..validation import require_choice
from .alignment import AlignConfig, check_run
from .groundtruth import SINGLE_TARGET, reward
from .mixture import Mixture, generators


KL_FORMS = ("k3", "reward")
SCALE_REWARDS = ("none", "group")


@dataclass(frozen=True)
class GRPOConfig(AlignConfig):
    """GRPO hyperparameters (App. A.2: learning rate 1e-2, batch 256; one update per batch)."""

    kl_form: str = "k3"
    """"k3": β·k3 in the loss (GRPO as published; forward-KL gradient); "reward": β·log π/π_ref folded
    into the reward (reverse KL, as PPO's eq. 3; the algorithm `grpo_reward`)."""
    scale_rewards: str = "none"
    """"none": A = R − mean R (App. A.2); "group": also divide by the group's std (DeepSeekMath, TRL)."""

    def __post_init__(self):
        super().__post_init__()
        require_choice(self, "kl_form", KL_FORMS)
        require_choice(self, "scale_rewards", SCALE_REWARDS)


def grpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, rewards: torch.Tensor,
              beta: torch.Tensor | float, kl_form: str = "k3", scale_rewards: str = "none") -> torch.Tensor:
    """Per-row GRPO loss over the last axis -> [B], one update per batch (ρ ≡ 1 in value):

    "k3": −mean(ρA) + β mean(k3), A = R − mean R; "reward": −mean(ρA), A = R' − mean R', R' = R − β k1.
    `logp` carries the gradient; the advantages are built from the detached `logp_old`."""
    with torch.no_grad():
        if kl_form == "reward":
            rewards = objectives.shaped_reward(rewards, logp_old, logp_ref, beta)
        advantages = objectives.group_advantages(rewards, scale=scale_rewards == "group")
    loss = objectives.policy_loss(logp, logp_old, advantages)
    if kl_form == "k3":
        loss = loss + beta * objectives.k3(logp, logp_ref)
    return loss.mean(-1)


def train(policy: Mixture, reference: Mixture, config: GRPOConfig, seed: int, trials: Sequence[int],
          targets: Sequence[int] = SINGLE_TARGET, betas: Sequence[float] | torch.Tensor | None = None,
          checkpoints: Sequence[int] = (), stage: str = "grpo", progress: bool = False) -> dict[int, Mixture]:
    """Align every row of `policy` against its fixed `reference` row; see `ppo.train` for the contract."""
    targets, beta, points, n_settings = check_run(policy, reference, config, trials, targets, betas, checkpoints)
    gens = generators(seed, f"{stage}/sample", trials, n_settings)
    reference = reference.detach()
    policy = policy.trainable()
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    snapshots = {0: policy.detach()} if 0 in points else {}
    for it in tqdm(range(1, config.n_iterations + 1), desc=f"GRPO {stage}", disable=not progress, leave=False):
        x = policy.sample(config.batch_size, gens)
        with torch.no_grad():
            rewards = reward(x, targets)
            logp_ref = reference.log_prob(x)
        logp = policy.log_prob(x)
        loss = grpo_loss(logp, logp.detach(), logp_ref, rewards, beta, config.kl_form, config.scale_rewards).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it in points:
            snapshots[it] = policy.detach()
    return snapshots
