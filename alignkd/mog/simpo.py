"""SimPO: a reference-free length-normalised likelihood margin on on-policy pairs (Meng et al. 2024).

The escape the paper's argument predicts (§3.4): the trap needs a *fixed* reference whose log-ratio enters
the loss; SimPO has none. Each iteration, per row:

1. sample `batch_size` points from the current policy and pair the first half with the second half,
   the winner y_w being the higher oracle reward (`dpo_online.label_pairs`, exactly as on-policy DPO);
2. one Adam step on the mean SimPO loss (`objectives.simpo_loss`, eq. 6; TRL's CPO `loss_type="simpo"`):

       −log σ(β (avg log π_θ(y_w) − avg log π_θ(y_l)) − γ).

A MoG point is one "token", so the length normalisation (1/|y|) is the identity: avg log π_θ(y) is the
policy's log-density of the point. No π_ref enters: `train` accepts `reference` only for the common
contract of `ppo.train` (and checks its shape) and never reads it. β here scales the margin; it is not a
KL coefficient (there is no KL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import objectives
from .alignment import AlignConfig, check_run
from .dpo_online import label_pairs
from .groundtruth import SINGLE_TARGET
from .mixture import Mixture, generators


@dataclass(frozen=True)
class SimPOConfig(AlignConfig):
    """SimPO hyperparameters (App. A.2's learning rate 1e-2 and batch 256 = 128 pairs, as on-policy DPO)."""

    gamma: float = 0.5
    """Target reward margin γ ≥ 0 (TRL `CPOConfig.simpo_gamma`, default 0.5; γ = 0 is the SimPO paper's
    no-margin ablation)."""

    def __post_init__(self):
        super().__post_init__()
        gamma = self.gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma < float("inf"):
            raise ValueError(f"SimPOConfig.gamma = {self.gamma!r}: must be a finite number >= 0")


def train(policy: Mixture, reference: Mixture, config: SimPOConfig, seed: int, trials: Sequence[int],
          targets: Sequence[int] = SINGLE_TARGET, betas: Sequence[float] | torch.Tensor | None = None,
          checkpoints: Sequence[int] = (), stage: str = "simpo", progress: bool = False) -> dict[int, Mixture]:
    """Align every row of `policy` by SimPO; `reference` is unused (see the module docstring), otherwise
    the contract of `ppo.train`."""
    targets, beta, points, n_settings = check_run(policy, reference, config, trials, targets, betas, checkpoints)
    gens = generators(seed, f"{stage}/sample", trials, n_settings)
    policy = policy.trainable()
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    snapshots = {0: policy.detach()} if 0 in points else {}
    for it in tqdm(range(1, config.n_iterations + 1), desc=f"SimPO {stage}", disable=not progress, leave=False):
        winners, losers = label_pairs(policy.sample(config.batch_size, gens), targets)
        # one point is one token: its log-density is already the length-normalised log-likelihood
        loss = objectives.simpo_loss(policy.log_prob(winners), policy.log_prob(losers), beta, config.gamma)
        loss = loss.mean(-1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it in points:
            snapshots[it] = policy.detach()
    return snapshots
