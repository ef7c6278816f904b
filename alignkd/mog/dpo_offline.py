"""Off-policy DPO: one static preference dataset sampled from the reference (App. A.2, B.2).

Before training, each row samples `n_pairs` pairs from its reference π_ref once and labels them with
the oracle reward. Every iteration takes `batch_size / 2` pairs from that fixed dataset (indices
drawn from the row's stream) and one Adam step on the DPO loss (`objectives.dpo_loss`, eq. 2). A
low-recall reference therefore inherits its sampling trap into the dataset itself (§3.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import objectives
from ..validation import require_int
from .alignment import AlignConfig, check_run
from .dpo_online import label_pairs
from .groundtruth import SINGLE_TARGET
from .mixture import Mixture, generators, uniforms


@dataclass(frozen=True)
class DPOOfflineConfig(AlignConfig):
    """Off-policy DPO hyperparameters (App. A.2: learning rate 1e-2, batch 256 samples = 128 pairs per step)."""

    n_pairs: int = 12_800
    """Size of the static preference dataset per row (the paper does not state it; 100 steps' worth)."""

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "n_pairs")


def train(policy: Mixture, reference: Mixture, config: DPOOfflineConfig, seed: int, trials: Sequence[int],
          targets: Sequence[int] = SINGLE_TARGET, betas: Sequence[float] | torch.Tensor | None = None,
          checkpoints: Sequence[int] = (), stage: str = "dpo_offline", progress: bool = False) -> dict[int, Mixture]:
    """Align every row of `policy` on pairs sampled once from its `reference` row; see `ppo.train`."""
    targets, beta, points, n_settings = check_run(policy, reference, config, trials, targets, betas, checkpoints)
    reference = reference.detach()
    winners, losers = label_pairs(reference.sample(2 * config.n_pairs, generators(seed, f"{stage}/data", trials,
                                                                                    n_settings)), targets)
    with torch.no_grad():
        ref_w, ref_l = reference.log_prob(winners), reference.log_prob(losers)
    index_gens = generators(seed, f"{stage}/index", trials, n_settings)
    pairs_per_step = config.batch_size // 2
    policy = policy.trainable()
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    snapshots = {0: policy.detach()} if 0 in points else {}
    for it in tqdm(range(1, config.n_iterations + 1), desc=f"DPO (off-policy) {stage}", disable=not progress,
                   leave=False):
        idx = (uniforms(index_gens, pairs_per_step) * config.n_pairs).long().clamp(max=config.n_pairs - 1)
        w = torch.gather(winners, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
        l = torch.gather(losers, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
        loss = objectives.dpo_loss(policy.log_prob(w), policy.log_prob(l), torch.gather(ref_w, 1, idx),
                                   torch.gather(ref_l, 1, idx), beta).mean(-1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it in points:
            snapshots[it] = policy.detach()
    return snapshots
