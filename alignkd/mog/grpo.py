"""GRPO: critic-free policy gradient with a batch-mean baseline and a KL penalty (App. A.2, B.1).

Each iteration samples `batch_size` points from the current policy (one "group" per row), takes the
advantage A = R − mean(R) over the group (App. A.2: "the difference between an individual sample's
reward and this batch-mean-reward"), and takes one Adam step on

    −mean(ρ A) + β · mean(k3),   ρ = π_θ/π_old (= 1 in value, its gradient is ∇log π_θ),
    k3 = π_ref/π_θ − log(π_ref/π_θ) − 1     (DeepSeekMath's unbiased, non-negative KL estimator).

The KL term is in the loss, not in the reward as in PPO; differentiated on samples of π_θ, the k3
penalty behaves like a forward KL(π_ref‖π_θ) pull (SPEC §4 note), a weaker trap than PPO's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import objectives
from .alignment import AlignConfig, check_run
from .groundtruth import SINGLE_TARGET, reward
from .mixture import Mixture, generators


@dataclass(frozen=True)
class GRPOConfig(AlignConfig):
    """GRPO hyperparameters (App. A.2: lr 1e-2, batch 256; one update per batch)."""

    scale_advantages: bool = False
    """Divide the advantage by the group's reward std (DeepSeekMath does; App. A.2 describes only
    the mean baseline, so off by default)."""


def grpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, advantages: torch.Tensor,
              beta: torch.Tensor | float) -> torch.Tensor:
    """Per-row GRPO loss −mean(ρA) + β mean(k3) over the last axis -> [B] (one update per batch: ρ ≡ 1)."""
    return (objectives.policy_loss(logp, logp_old, advantages) + beta * objectives.k3(logp, logp_ref)).mean(-1)


def train(policy: Mixture, reference: Mixture, config: GRPOConfig, seed: int, trials: Sequence[int],
          targets: Sequence[int] = SINGLE_TARGET, betas: Sequence[float] | torch.Tensor | None = None,
          checkpoints: Sequence[int] = (), stage: str = "grpo", progress: bool = False) -> dict[int, Mixture]:
    """Align every row of `policy` against its fixed `reference` row; see `ppo.train` for the contract."""
    targets, beta, points, n_settings = check_run(policy, reference, config, trials, targets, betas, checkpoints)
    gens = generators(seed, f"{stage}/sample", trials, n_settings)
    reference = reference.detach()
    policy = policy.trainable()
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    snapshots = {0: policy.detach()} if 0 in points else {}
    for it in tqdm(range(1, config.n_iterations + 1), desc=f"GRPO {stage}", disable=not progress, leave=False):
        x = policy.sample(config.batch_size, gens)
        with torch.no_grad():
            advantages = objectives.group_advantages(reward(x, targets), scale=config.scale_advantages)
            logp_ref = reference.log_prob(x)
        logp = policy.log_prob(x)
        loss = grpo_loss(logp, logp.detach(), logp_ref, advantages, beta).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it in points:
            snapshots[it] = policy.detach()
    return snapshots
