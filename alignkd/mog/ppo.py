"""PPO with a learned value baseline, a clipped ratio and the KL folded into the reward (§3.1, App. A.2).

The MoG "prompt" is a single constant state, so the critic (the paper's `ValueModel`) is one learned
scalar V per row: the expected shaped reward under the current policy. Each iteration:

1. sample `batch_size` points x from the current policy π_old (per-row streams);
2. shape the oracle reward with the reverse-KL term of eq. (3),
   r'(x) = R(x) − β [log π_old(x) − log π_ref(x)],
   which → −∞ where π_ref(x) → 0: the learning trap of a low-recall reference;
3. advantage A = r' − V with the learned V (App. A.2: "A(s, a) = R(s, a) − V(s)"), divided by the
   batch std of r' per row when `whiten_advantages` (see `advantages`: no mean shift, or V cancels);
4. `num_ppo_epochs` full-batch Adam steps on the clipped surrogate
   −min(ρA, clip(ρ, 1 ± ε)A), ρ = π_θ(x)/π_old(x), plus `vf_coef` · ½(V − r')².

V starts at 0 and learns at the policy's learning rate, so early on it lags the shaped reward and
A has a positive mean; `vf_coef = 0` switches the critic off (V stays 0: no baseline).
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
    """PPO hyperparameters (App. A.2 for the learning rate and batch; cleanrl defaults for the rest)."""

    epsilon: float = 0.2
    """Ratio clipping ε (Schulman et al. 2017)."""
    num_ppo_epochs: int = 2
    """Full-batch gradient steps per sampled batch (the ratio moves away from 1 after the first)."""
    vf_coef: float = 0.5
    """Weight of the value (critic) loss; 0 switches the critic off (V stays 0, A = r')."""
    whiten_advantages: bool = True
    """Divide the advantages by the row's batch std (scale only: the mean is kept, see `advantages`)."""

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.epsilon < 1:
            raise ValueError(f"PPOConfig.epsilon = {self.epsilon!r}: must be in (0, 1)")
        require_int(self, "num_ppo_epochs")
        if not self.vf_coef >= 0:
            raise ValueError(f"PPOConfig.vf_coef = {self.vf_coef!r}: must be >= 0")


def advantages(returns: torch.Tensor, value: torch.Tensor, whiten: bool) -> torch.Tensor:
    """A = r' − V per row ([B, N] and [B, 1]), divided by the row's batch std of r' when `whiten`.

    With one state V is a scalar per row. Whitening with a mean shift (cleanrl's default) would make
    A = (r' − mean r') / std: V drops out and the critic trains without effect, which makes PPO GRPO
    with std scaling (issue 10). Dividing by the std alone is the same for every sample of a row, so
    it only rescales the row's step (comparable across β, whose shaped rewards differ in scale) and
    keeps the learned baseline in the update."""
    centred = returns - value
    return objectives.whiten(centred, dim=-1, shift_mean=False) if whiten else centred


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
    optimizer = torch.optim.Adam(policy.parameters() + [value], lr=config.learning_rate)
    snapshots = {0: policy.detach()} if 0 in points else {}
    for it in tqdm(range(1, config.n_iterations + 1), desc=f"PPO {stage}", disable=not progress, leave=False):
        x = policy.sample(config.batch_size, gens)
        logp = policy.log_prob(x)  # the first epoch's log π_θ is log π_old: compute it once
        with torch.no_grad():
            logp_old = logp.detach()
            returns = objectives.shaped_reward(reward(x, targets), logp_old, reference.log_prob(x), beta)
            advantage = advantages(returns, value, config.whiten_advantages)
        for epoch in range(config.num_ppo_epochs):
            if epoch > 0:
                logp = policy.log_prob(x)
            policy_loss = objectives.policy_loss(logp, logp_old, advantage, config.epsilon).mean(-1)
            value_loss = objectives.value_loss(value, returns).mean(-1)
            loss = (policy_loss + config.vf_coef * value_loss).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if it in points:
            snapshots[it] = policy.detach()
    return snapshots
