"""How much of the target a model still covers: the premise of the paper's trap, measured (§3.4, Figure 1).

The paper's mechanism needs a K-A reference that has lost the target, π_ref(y*) ≈ 0 (§3.4). For a model q
(a batch of mixtures, rows = settings × trials) `target_coverage` measures, per row,

- `target_share`: the share of q's samples whose nearest p* mode is a target mode (p* itself: 1/8 for
  one target). With several targets, `least_target_share` is the smallest per-target share;
- `log_density_at_target`: log q at the target centre (several targets: the smallest over them), the
  exact quantity §3.4 calls π_ref(y*);

and calls a row's target *lost* when its least per-target share is below `LOST_SHARE` (1 %). Shares are
Monte-Carlo over `n_samples` draws from the row's own stream (seed, "coverage", trial); densities are exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from .groundtruth import MODE_SPACING, SINGLE_TARGET, check_targets, mode_centers, nearest_mode
from .metrics import N_EVAL_SAMPLES
from .mixture import Mixture, generators

LOST_SHARE = 0.01
"""A row has lost a target when fewer than 1 % of its samples fall nearest to it (p* puts 12.5 % there)."""


@torch.no_grad()
def target_coverage(q: Mixture, targets: Sequence[int] = SINGLE_TARGET, seed: int = 0,
                    trials: Sequence[int] = (0,), n_samples: int = N_EVAL_SAMPLES,
                    spacing: float = MODE_SPACING) -> pd.DataFrame:
    """One line per row of q: `row`, `trial`, `target_share`, `least_target_share`,
    `log_density_at_target` and `lost` (least_target_share < LOST_SHARE); see the module docstring."""
    targets = check_targets(targets)
    trials = list(trials)
    if n_samples < 1:
        raise ValueError(f"n_samples = {n_samples}: must be >= 1")
    if not trials or q.n_rows % len(trials):
        raise ValueError(f"target_coverage: {q.n_rows} rows is not a multiple of {len(trials)} trials")
    n_settings = q.n_rows // len(trials)
    x = q.sample(n_samples, generators(seed, "coverage", trials, n_settings))
    nearest = nearest_mode(x, spacing)  # [B, N]
    per_target = torch.stack([(nearest == t).float().mean(-1) for t in targets], -1)  # [B, T]
    centers = mode_centers(spacing)[list(targets)]
    log_density = q.log_prob(centers.expand(q.n_rows, -1, -1))  # [B, T]
    least = per_target.min(-1).values
    return pd.DataFrame({
        "row": range(q.n_rows),
        "trial": trials * n_settings,
        "target_share": per_target.sum(-1).numpy(),
        "least_target_share": least.numpy(),
        "log_density_at_target": log_density.min(-1).values.numpy(),
        "lost": (least < LOST_SHARE).numpy(),
    })


def coverage_summary(coverage: pd.DataFrame, by: str | Sequence[str] = "model") -> pd.DataFrame:
    """Per group: trials, how many lost the target, the share's median and range, the median log density."""
    by = [by] if isinstance(by, str) else list(by)
    g = coverage.groupby(by, sort=False)
    return pd.DataFrame({
        "trials": g.size(),
        "lost (share < 1 %)": g.lost.sum().astype(int),
        "share median": g.target_share.median(),
        "share min": g.target_share.min(),
        "share max": g.target_share.max(),
        "log q(target) median": g.log_density_at_target.median(),
    })


__all__ = ["LOST_SHARE", "target_coverage", "coverage_summary"]
