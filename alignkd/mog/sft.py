"""Supervised fine-tuning (SFT): fit a batch of mixtures to samples by maximum likelihood (App. A.1).

At every step each row draws a fresh batch from its own data source (p* for the high-recall model
p', a sharpened teacher for KD, see `kd.py`) and takes one Adam step on the mean negative
log-likelihood. Losses are summed over rows, so every row gets exactly its own gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from tqdm.auto import tqdm

from ..validation import require_int, require_positive
from .groundtruth import MODE_SPACING, N_MODES, sample_p_star
from .mixture import Mixture, generators, uniforms


@dataclass(frozen=True)
class SFTConfig:
    """Maximum-likelihood fitting of a mixture (App. A.1)."""

    n_components: int = 6
    """Components K of the fitted model (p': 6, App. A.1); at most the 8 modes of p*."""
    n_iterations: int = 2000
    """Adam steps (App. A.1: N_ITERATIONS_SFT_KD = 2000)."""
    batch_size: int = 256
    """Fresh samples per step and row (App. A.2's batch size; the paper gives none for SFT)."""
    learning_rate: float = 1e-2
    """Adam learning rate (App. A.2's 1e-2; the paper gives none for SFT)."""
    init_spread: float = 2.0
    """Initial means are uniform in [−init_spread, init_spread]²."""
    init_scale: float = 0.5
    """Initial standard deviation of every component on each axis."""

    def __post_init__(self):
        if isinstance(self.n_components, bool) or not isinstance(self.n_components, int) \
                or not 1 <= self.n_components <= N_MODES:
            raise ValueError(f"n_components = {self.n_components!r}: must be an integer in 1..{N_MODES} "
                             f"(p* has {N_MODES} modes; more components than modes is not a compression)")
        require_int(self, "n_iterations", minimum=0)
        require_int(self, "batch_size")
        require_positive(self, "learning_rate", "init_spread", "init_scale")


Sampler = Callable[[int, list[torch.Generator]], torch.Tensor]
"""sampler(n, gens) -> [B, n, 2]: n fresh data points per row, row b drawn with gens[b]."""


def p_star_sampler(n: int, gens: list[torch.Generator], spacing: float = MODE_SPACING) -> torch.Tensor:
    """Samples of the ground truth p* (modes `spacing` apart), one row per generator."""
    return sample_p_star(uniforms(gens, n, 3), spacing)


def fit(sampler: Sampler, config: SFTConfig, seed: int, stage: str, trials: list[int] | range,
        n_settings: int = 1, progress: bool = False) -> Mixture:
    """Fit a fresh `config.n_components` mixture per row to `sampler`'s data; rows = n_settings × trials.

    The initial means come from the stream (seed, stage + "/init", trial), the data from
    (seed, stage + "/data", trial), so a trial fitted alone equals its row of a batched fit.
    """
    model = Mixture.random_init(config.n_components, generators(seed, f"{stage}/init", trials, n_settings),
                                config.init_spread, config.init_scale).trainable()
    data_gens = generators(seed, f"{stage}/data", trials, n_settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    for _ in tqdm(range(config.n_iterations), desc=f"SFT {stage} (K={config.n_components})",
                  disable=not progress, leave=False):
        x = sampler(config.batch_size, data_gens)
        loss = -model.log_prob(x).mean(-1).sum()  # sum over rows: each row keeps its own gradient
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.detach()


def fit_p_star(config: SFTConfig, seed: int, trials: list[int] | range, stage: str = "sft",
               progress: bool = False, spacing: float = MODE_SPACING) -> Mixture:
    """The high-recall model p': `config.n_components` components fit to p* (App. A.1), one row per trial."""
    return fit(partial(p_star_sampler, spacing=spacing), config, seed, stage, trials, progress=progress)
