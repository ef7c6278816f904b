"""The PAD student on the MoG testbed: a tempered mixture to sample from, and a fresh compact initialisation.

Temperature of a Gaussian mixture. For one Gaussian, q^{1/τ} normalised is exactly N(μ, τΣ). For a
mixture we temper each component exactly and keep the mass the tempered component would have,

    q_τ(x) = Σ_k w_k N(x; μ_k, τ Σ_k),   w_k ∝ ∫ (α_k N_k)^{1/τ} dx ∝ α_k^{1/τ} Π_d σ_{k,d}^{1 − 1/τ},

which equals q^{1/τ}/Z wherever the components do not overlap (tested on a grid). τ < 1 sharpens the
weights like β_KD = 1/τ and narrows every component by √τ; τ = 1 is q itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ...mog.mixture import LOG_SCALE_MIN, Mixture, generators
from ...mog.sft import SFTConfig


def tempered(q: Mixture, tau: float) -> Mixture:
    """The mixture q_τ of the module docstring: each component tempered exactly, weights by its tempered mass."""
    if not tau > 0:
        raise ValueError(f"tau = {tau!r}: must be > 0")
    log_scales = q.log_scales.detach().clamp(min=LOG_SCALE_MIN)
    logits = q.log_weights().detach() / tau + (1.0 - 1.0 / tau) * log_scales.sum(-1)
    return Mixture(logits, q.means.detach().clone(), log_scales + 0.5 * math.log(tau))


def fresh_student(n_components: int, seed: int, trials: Sequence[int], n_settings: int, stage: str) -> Mixture:
    """A compact student initialised as `sft.fit` initialises KD students (stream (seed, stage/init, trial))."""
    init = SFTConfig(n_components=n_components, n_iterations=0)
    return Mixture.random_init(n_components, generators(seed, f"{stage}/init", list(trials), n_settings),
                               init.init_spread, init.init_scale)
