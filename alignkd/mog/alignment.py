"""What the alignment algorithms share: the config fields of App. A.2, per-row β, the run checks.

Every algorithm (ppo.py, grpo.py, dpo_online.py, dpo_offline.py) aligns a batch of mixtures
(rows = sweep settings × trials) against a *fixed* reference, the model it starts from (§3), with
the oracle reward of `groundtruth.reward`. Each row may have its own β, so one batched run covers a
whole β sweep; snapshots at `checkpoints` give the iteration sweep from the same run. The
algorithms are looked up by name in `alignkd.mog.algorithms.ALGORITHMS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..validation import require_int, require_positive
from .groundtruth import check_targets

@dataclass(frozen=True)
class AlignConfig:
    """Hyperparameters every alignment algorithm has (App. A.2)."""

    beta: float = 1.0
    """KL coefficient (PPO, GRPO) or DPO coefficient β; > 0. Rows may override it (a β sweep)."""
    learning_rate: float = 1e-2
    """Adam learning rate (App. A.2: 1e-2)."""
    batch_size: int = 256
    """Samples drawn from the policy per iteration and row (App. A.2: 256; DPO: 128 pairs)."""
    n_iterations: int = 400
    """Iterations (policy samples + update). The paper states 2200 (PPO) and 900 (on-policy DPO) for
    the multi-target runs only; the chapters document the budget they use."""

    def __post_init__(self):
        check_betas([self.beta])
        require_positive(self, "learning_rate")
        require_int(self, "batch_size", minimum=2)
        require_int(self, "n_iterations", minimum=0)


def check_betas(betas: Sequence[float]) -> list[float]:
    """β values must be finite and > 0: β = 0 removes the reference, which is what is under test."""
    betas = [float(b) for b in betas]
    if not betas:
        raise ValueError("beta: need at least one value (allowed: floats > 0)")
    for b in betas:
        if not (b > 0 and b < float("inf")):
            raise ValueError(f"beta = {b!r}: must be > 0 and finite (the KL/DPO coefficient anchors the "
                             f"policy to its reference; allowed: floats > 0)")
    return betas


def row_betas(config: AlignConfig, betas: torch.Tensor | Sequence[float] | None, n_rows: int) -> torch.Tensor:
    """[B, 1] per-row β: `betas` if given (one per row), else config.beta everywhere."""
    if betas is None:
        return torch.full((n_rows, 1), float(config.beta))
    values = torch.as_tensor(betas, dtype=torch.float32).reshape(-1)
    check_betas(values.tolist())
    if values.numel() != n_rows:
        raise ValueError(f"betas: {values.numel()} values for {n_rows} rows")
    return values.reshape(-1, 1)


def check_checkpoints(checkpoints: Sequence[int], n_iterations: int) -> list[int]:
    """Sorted, unique iteration counts in 0..n_iterations (n_iterations is always included)."""
    points = sorted({int(c) for c in checkpoints} | {n_iterations})
    if points[0] < 0 or points[-1] > n_iterations:
        raise ValueError(f"checkpoints {list(checkpoints)}: must lie in 0..n_iterations = {n_iterations}")
    return points


def check_run(policy, reference, config: AlignConfig, trials: Sequence[int], targets: Sequence[int],
              betas: torch.Tensor | Sequence[float] | None, checkpoints: Sequence[int]):
    """The checks every `train` makes before any compute; returns (targets, β [B, 1], checkpoints, n_settings).

    `policy` and `reference` are `Mixture`s with one row per (setting, trial), setting-major.
    """
    if reference.n_rows != policy.n_rows:
        raise ValueError(f"reference has {reference.n_rows} rows, policy {policy.n_rows}")
    if len(trials) == 0 or policy.n_rows % len(trials):
        raise ValueError(f"policy has {policy.n_rows} rows, not a multiple of {len(trials)} trials")
    return (check_targets(targets), row_betas(config, betas, policy.n_rows),
            check_checkpoints(checkpoints, config.n_iterations), policy.n_rows // len(trials))
