"""PPO with a learned value baseline, a clipped ratio and the KL folded into the reward (§3.1, App. A.2).

The MoG "prompt" is a single constant state, so the critic (the paper's `ValueModel`) is one learned
scalar V per row: the expected shaped reward under the current policy. Each iteration:

1. sample `batch_size` points x from the current policy π_old (per-row streams);
2. shape the oracle reward with the reverse-KL term of eq. (3),
   r'(x) = R(x) − β [log π_old(x) − log π_ref(x)],
   which → −∞ where π_ref(x) → 0: the learning trap of a low-recall reference;
3. advantage A = r' − V (optionally standardised per row, as cleanrl does);
4. `update_epochs` full-batch Adam steps on the clipped surrogate
   −min(ρA, clip(ρ, 1 ± ε)A), ρ = π_θ(x)/π_old(x), plus `value_coef` · ½(V − r')².
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import objectives
from ..validation import require_int
from .alignment import AlignConfig, check_run
from .groundtruth import SINGLE_TARGET, reward
from .mixture import Mixture, generators


@dataclass(frozen=True)
class PPOConfig(AlignConfig):
    """PPO hyperparameters (App. A.2 for lr, batch; cleanrl defaults for the rest)."""

    clip: float = 0.2
    """Ratio clipping ε (Schulman et al. 2017)."""
    update_epochs: int = 2
    """Full-batch gradient steps per sampled batch (the ratio moves away from 1 after the first)."""
    value_coef: float = 0.5
    """Weight of the value (critic) loss."""
    normalize_advantages: bool = True
    """Standardise advantages per row and batch (cleanrl's default)."""

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.clip < 1:
            raise ValueError(f"clip = {self.clip!r}: must be in (0, 1)")
        require_int(self, "update_epochs")
        if not self.value_coef >= 0:
            raise ValueError(f"value_coef = {self.value_coef!r}: must be >= 0")


def train(policy: Mixture, reference: Mixture, config: PPOConfig, seed: int, trials: Sequence[int],
          targets: Sequence[int] = SINGLE_TARGET, betas: Sequence[float] | torch.Tensor | None = None,
          checkpoints: Sequence[int] = (), stage: str = "ppo", progress: bool = False) -> dict[int, Mixture]:
    """Align every row of `policy` against the same row of the fixed `reference`.

    Rows are settings × trials (setting-major); `betas` gives one β per row (default config.beta).
    Returns {iteration: detached policy snapshot} for every checkpoint and for n_iterations.
    """
    targets, beta, points, n_settings = check_run(policy, reference, config, trials, targets, betas, checkpoints)
    gens = generators(seed, f"{stage}/sample", trials, n_settings)
    reference = reference.detach()
    policy = policy.trainable()
    value = torch.zeros(policy.n_rows, 1, requires_grad=True)  # the critic of the one constant state
    optimizer = torch.optim.Adam(policy.parameters() + [value], lr=config.lr)
    snapshots = {0: policy.detach()} if 0 in points else {}
    for it in tqdm(range(1, config.n_iterations + 1), desc=f"PPO {stage}", disable=not progress, leave=False):
        x = policy.sample(config.batch_size, gens)
        logp = policy.log_prob(x)  # the first epoch's log π_θ is log π_old: compute it once
        with torch.no_grad():
            logp_old = logp.detach()
            returns = objectives.shaped_reward(reward(x, targets), logp_old, reference.log_prob(x), beta)
            advantages = returns - value
            if config.normalize_advantages:
                advantages = (advantages - advantages.mean(-1, keepdim=True)) / (advantages.std(-1, keepdim=True) + 1e-8)
        for epoch in range(config.update_epochs):
            if epoch > 0:
                logp = policy.log_prob(x)
            policy_loss = objectives.policy_loss(logp, logp_old, advantages, config.clip).mean(-1)
            value_loss = objectives.value_loss(value, returns).mean(-1)
            loss = (policy_loss + config.value_coef * value_loss).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if it in points:
            snapshots[it] = policy.detach()
    return snapshots
