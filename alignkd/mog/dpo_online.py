"""On-policy DPO: fresh preference pairs from the current policy at every step (§4.1, App. A.2).

Each iteration samples `batch_size` points from the current policy, pairs the first half with the
second half, labels each pair with the oracle reward (higher reward = winner y_w), and takes one
Adam step on the DPO loss against the fixed reference (eq. 2):

    −log σ(β [log π_θ(y_w)/π_ref(y_w) − log π_θ(y_l)/π_ref(y_l)]).

The reference log-ratio is a per-pair constant offset: when π_ref(y_w) ≈ 0 the sigmoid saturates
and the pair's gradient vanishes (the DPO learning trap, §3.4).
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
class DPOOnlineConfig(AlignConfig):
    """On-policy DPO hyperparameters (App. A.2: learning rate 1e-2, batch 256 samples = 128 pairs)."""


def label_pairs(x: torch.Tensor, targets: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split [B, 2n, 2] into n pairs (first half vs second half), ordered (winner, loser) by reward."""
    n = x.shape[1] // 2
    a, b = x[:, :n], x[:, n:2 * n]
    a_wins = (reward(a, targets) >= reward(b, targets)).unsqueeze(-1)
    return torch.where(a_wins, a, b), torch.where(a_wins, b, a)


def train(policy: Mixture, reference: Mixture, config: DPOOnlineConfig, seed: int, trials: Sequence[int],
          targets: Sequence[int] = SINGLE_TARGET, betas: Sequence[float] | torch.Tensor | None = None,
          checkpoints: Sequence[int] = (), stage: str = "dpo_online", progress: bool = False) -> dict[int, Mixture]:
    """Align every row of `policy` against its fixed `reference` row; see `ppo.train` for the contract."""
    targets, beta, points, n_settings = check_run(policy, reference, config, trials, targets, betas, checkpoints)
    gens = generators(seed, f"{stage}/sample", trials, n_settings)
    reference = reference.detach()
    policy = policy.trainable()
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    snapshots = {0: policy.detach()} if 0 in points else {}
    for it in tqdm(range(1, config.n_iterations + 1), desc=f"DPO (on-policy) {stage}", disable=not progress,
                   leave=False):
        winners, losers = label_pairs(policy.sample(config.batch_size, gens), targets)
        with torch.no_grad():
            ref_w, ref_l = reference.log_prob(winners), reference.log_prob(losers)
        loss = objectives.dpo_loss(policy.log_prob(winners), policy.log_prob(losers), ref_w, ref_l, beta).mean(-1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it in points:
            snapshots[it] = policy.detach()
    return snapshots
