"""KTO: single samples labelled desirable or undesirable, against the fixed reference (§3.4; Ethayarajh et al. 2024).

The paper (§3.4) says the offset-induced saturation "persists in DPO-style objectives like KTO whenever a
fixed low-recall reference is retained". KTO keeps π_ref: the implied reward of a sample is the log-ratio
r = log π_θ(y) − log π_ref(y), compared with a reference point z_ref (a batch estimate of KL(π_θ ‖ π_ref)).
Each iteration, per row:

1. sample `batch_size` points y from the current policy;
2. label each desirable iff its oracle reward R(y) is above the row's batch median (balanced labels, half
   and half: KTO recommends λ_D = λ_U for balanced data, hence TRL's defaults of 1.0 for both weights);
3. z_ref = max(0, mean_y(log π_θ(y) − log π_ref(y))), detached (`objectives.kto_reference_point`; TRL's
   "mismatched" KL completions are, with one prompt, just other samples of π_θ);
4. one Adam step on the mean KTO loss (`objectives.kto_loss`, eq. 7):

       desirable:    λ_D (1 − σ(β (r − z_ref))),     undesirable:  λ_U (1 − σ(β (z_ref − r))).

Where π_ref(y*) ≈ 0 (a reference that has lost the target), a desirable y* near the target has r ≫ z_ref:
its sigmoid saturates and its gradient −λ_D β σ(1 − σ) vanishes, as DPO's does (the trap of §3.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import objectives
from ..validation import require_positive
from .alignment import AlignConfig, check_run
from .groundtruth import SINGLE_TARGET, reward
from .mixture import Mixture, generators


@dataclass(frozen=True)
class KTOConfig(AlignConfig):
    """KTO hyperparameters (App. A.2's learning rate 1e-2 and batch 256, as every MoG algorithm; β as DPO's)."""

    desirable_weight: float = 1.0
    """λ_D, the weight of the desirable samples' loss (TRL `KTOConfig.desirable_weight`, default 1.0: the
    labels here are balanced by construction, for which KTO recommends λ_D = λ_U)."""
    undesirable_weight: float = 1.0
    """λ_U, the weight of the undesirable samples' loss (TRL `KTOConfig.undesirable_weight`, default 1.0)."""

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "desirable_weight")
        require_positive(self, "undesirable_weight")


def label_desirable(rewards: torch.Tensor) -> torch.Tensor:
    """[B, n] oracle rewards -> bool [B, n], True where the reward is above the row's median.

    torch's median of an even count is the lower middle value, so (without ties) exactly half of each row
    is desirable: a balanced binary signal from a scalar reward, the way KTO turns scores into labels."""
    return rewards > rewards.median(-1, keepdim=True).values


def kto_batch_loss(logp: torch.Tensor, logp_ref: torch.Tensor, desirable: torch.Tensor, beta: torch.Tensor | float,
                   config: KTOConfig) -> torch.Tensor:
    """Per-row mean KTO loss over the last axis -> [B], with z_ref estimated per row on the same samples."""
    z_ref = objectives.kto_reference_point(logp, logp_ref, dim=-1, keepdim=True)
    return objectives.kto_loss(logp, logp_ref, desirable, z_ref, beta, config.desirable_weight,
                               config.undesirable_weight).mean(-1)


def train(policy: Mixture, reference: Mixture, config: KTOConfig, seed: int, trials: Sequence[int],
          targets: Sequence[int] = SINGLE_TARGET, betas: Sequence[float] | torch.Tensor | None = None,
          checkpoints: Sequence[int] = (), stage: str = "kto", progress: bool = False) -> dict[int, Mixture]:
    """Align every row of `policy` against its fixed `reference` row; see `ppo.train` for the contract."""
    targets, beta, points, n_settings = check_run(policy, reference, config, trials, targets, betas, checkpoints)
    gens = generators(seed, f"{stage}/sample", trials, n_settings)
    reference = reference.detach()
    policy = policy.trainable()
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    snapshots = {0: policy.detach()} if 0 in points else {}
    for it in tqdm(range(1, config.n_iterations + 1), desc=f"KTO {stage}", disable=not progress, leave=False):
        x = policy.sample(config.batch_size, gens)
        with torch.no_grad():
            desirable = label_desirable(reward(x, targets))
            logp_ref = reference.log_prob(x)
        loss = kto_batch_loss(policy.log_prob(x), logp_ref, desirable, beta, config).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it in points:
            snapshots[it] = policy.detach()
    return snapshots
