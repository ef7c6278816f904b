"""Which grid did the paper's Figure 1 use? p*'s own Target Precision at any mode spacing (App. A.1, Figure 1).

App. A.1 places p*'s modes on {−1.5, 0, 1.5}², but Figure 1's Target Precision of p' (−34.78) is what p*
itself scores on the grid of spacing 1.0 (E_{x~p*}[log p_target(x)] = −34.84 there, −78.6 at 1.5). This
module holds that p* reference value, by quadrature at any spacing; chapter 02 (`alignkd.chapters.ch02_mog_setup`)
compares it and our trial means at each spacing with the paper's numbers.
"""

from __future__ import annotations

import torch

from .groundtruth import MODE_SPACING, SINGLE_TARGET, log_p_star, log_p_target


def p_star_target_precision(spacing: float = MODE_SPACING, targets=SINGLE_TARGET, step: float = 0.01) -> float:
    """E_{x~p*}[log p_target(x)] by quadrature on a grid (p*'s own Target Precision at this spacing)."""
    half = spacing + 1.6
    axis = torch.arange(-half, half, step, dtype=torch.float64)
    x = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    weight = torch.exp(log_p_star(x, spacing)) * step * step
    return float((weight * log_p_target(x, targets, spacing)).sum())


__all__ = ["p_star_target_precision"]
