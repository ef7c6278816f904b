"""The exact ground truth of the Mixture-of-Gaussians testbed (paper §4.1, App. A.1).

p* is an equal-weight mixture of 8 isotropic Gaussians (covariance 0.05·I) on the 3×3 grid
{−s, 0, s}² without its centre, s = `spacing` (App. A.1: 1.5; Figure 1's numbers match 1.0, see chapter 02). Modes are numbered 0..7 row-major from the top-left, skipping
the centre, so mode 7 is (1.5, −1.5) (the paper's single target) and mode 6 is (0, −1.5), its left
neighbour (the second target of the multi-target experiments, App. B.4).

p_target is the Gaussian of the target mode (several targets: their equal mixture), and the oracle
reward is R(x) = 10·exp(−α‖x − c_t‖²) with α = 2 (eq. 4, 8); with several targets, the maximum over
them. Everything here is an exact density or an exact function; nothing is learned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .mixture import standard_normal

MODE_SPACING = 1.5  # App. A.1: modes on {−1.5, 0, 1.5}²
_UNIT_GRID = torch.tensor(
    [[x, y] for y in (1.0, 0.0, -1.0) for x in (-1.0, 0.0, 1.0) if (x, y) != (0.0, 0.0)],
    dtype=torch.float32,
)


def check_spacing(spacing: float, name: str = "mode_spacing") -> float:
    """The grid spacing must be a finite number > 0; raise ValueError naming `name` otherwise."""
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or not 0 < spacing < float("inf"):
        raise ValueError(f"{name} = {spacing!r}: must be a finite number > 0 (distance between neighbouring "
                         f"modes of p*; App. A.1: {MODE_SPACING})")
    return float(spacing)


def mode_centers(spacing: float = MODE_SPACING) -> torch.Tensor:
    """[8, 2] centres of p*'s modes on the grid of this spacing, numbered row-major from the top-left."""
    return _UNIT_GRID * check_spacing(spacing)


MODE_CENTERS = mode_centers()
"""[8, 2] centres at App. A.1's spacing 1.5 (mode 7 = (1.5, −1.5))."""

N_MODES = MODE_CENTERS.shape[0]
VARIANCE = 0.05  # App. A.1: covariance 0.05·I
SINGLE_TARGET = (7,)  # App. A.1: mode #7 at (1.5, −1.5)
MULTI_TARGET = (7, 6)  # App. B.4: the target and its immediate left neighbour
REWARD_SCALE = 10.0  # eq. 4
REWARD_ALPHA = 2.0  # eq. 4: sharpness of the reward peak


def check_targets(targets: Sequence[int]) -> tuple[int, ...]:
    """Validate target mode numbers; raise ValueError naming the allowed values."""
    targets = tuple(targets)
    if not targets:
        raise ValueError(f"targets: need at least one target mode (allowed: 0..{N_MODES - 1})")
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < N_MODES:
            raise ValueError(f"targets: unknown target mode {t!r} (allowed: integers 0..{N_MODES - 1}, "
                             f"numbered row-major from the top-left; the paper's target is 7)")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets: repeated target mode in {targets}")
    return targets


def _isotropic_log_density(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """log N(x; c, VARIANCE·I) for every centre: x [..., 2], centers [M, 2] -> [..., M]."""
    sq = ((x.unsqueeze(-2) - centers) ** 2).sum(-1)
    return -sq / (2 * VARIANCE) - math.log(2 * math.pi * VARIANCE)


def log_p_star(x: torch.Tensor, spacing: float = MODE_SPACING) -> torch.Tensor:
    """Exact log p*(x) for points x [..., 2] -> [...]."""
    return torch.logsumexp(_isotropic_log_density(x, mode_centers(spacing).to(x)), -1) - math.log(N_MODES)


def log_p_target(x: torch.Tensor, targets: Sequence[int] = SINGLE_TARGET, spacing: float = MODE_SPACING) -> torch.Tensor:
    """Exact log p_target(x): the target mode's Gaussian, or the equal mixture of several."""
    targets = check_targets(targets)
    centers = mode_centers(spacing)[list(targets)].to(x)
    return torch.logsumexp(_isotropic_log_density(x, centers), -1) - math.log(len(targets))


def reward(x: torch.Tensor, targets: Sequence[int] = SINGLE_TARGET, spacing: float = MODE_SPACING) -> torch.Tensor:
    """Oracle reward R(x) = 10·exp(−2‖x − c_t‖²), maximised over the targets; x [..., 2] -> [...]."""
    targets = check_targets(targets)
    centers = mode_centers(spacing)[list(targets)].to(x)
    sq = ((x.unsqueeze(-2) - centers) ** 2).sum(-1)
    return REWARD_SCALE * torch.exp(-REWARD_ALPHA * sq.min(-1).values)


def sample_p_star(uniforms: torch.Tensor, spacing: float = MODE_SPACING) -> torch.Tensor:
    """Samples of p* from uniforms [..., 3] in (0, 1): one picks the mode, two make the Gaussian noise.

    Taking uniforms (rather than a generator) lets batched callers draw each trial's randomness from
    that trial's own stream (see `alignkd.mog.mixture.uniforms`).
    """
    mode = torch.clamp((uniforms[..., 0] * N_MODES).long(), max=N_MODES - 1)
    noise = standard_normal(uniforms[..., 1:])
    return mode_centers(spacing).to(uniforms)[mode] + math.sqrt(VARIANCE) * noise


def nearest_mode(x: torch.Tensor, spacing: float = MODE_SPACING) -> torch.Tensor:
    """[...] number of the p* mode nearest to each point x [..., 2] (Euclidean distance)."""
    centers = mode_centers(spacing).to(x)
    return ((x.unsqueeze(-2) - centers) ** 2).sum(-1).argmin(-1)
