"""A differentiable Gaussian mixture in R², batched over any leading dimensions.

Shapes: `logits` [*B, K], `means` [*B, K, 2], `log_std` [*B, K, 2] (diagonal covariance). The
library uses B = [settings, trials]: all trials of all sweep settings of one algorithm are one
tensor and train as one computation (Adam is elementwise, the loss is a sum of per-trial means,
so trials never interact). `log_prob` is exact (logsumexp over components); `sample` is
ancestral sampling driven by `TrialStreams`, so the trial axis of the noise lines up with the
trial axis of the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .streams import TrialStreams

LOG_2PI = math.log(2 * math.pi)
MIN_LOG_STD = math.log(1e-3)  # keeps densities finite when alignment squeezes a component


@dataclass
class Mixture:
    """Mixture weights softmax(logits), component means and per-axis log standard deviations."""

    logits: torch.Tensor
    means: torch.Tensor
    log_std: torch.Tensor

    def __post_init__(self):
        k = self.logits.shape[-1]
        if self.means.shape[-2:] != (k, 2) or self.log_std.shape[-2:] != (k, 2):
            raise ValueError(f"Mixture: shapes logits {tuple(self.logits.shape)}, means {tuple(self.means.shape)}, "
                             f"log_std {tuple(self.log_std.shape)} do not describe K={k} components in R²")

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def random_init(cls, n_components: int, streams: TrialStreams, n_settings: int | None = None,
                    spread: float = 2.0, init_std: float = 0.5) -> Mixture:
        """Equal weights, means uniform in [-spread, spread]², std `init_std`; batch [trials] or [settings, trials].

        The means come from each trial's stream, so the same trial starts from the same point in
        every setting and when run alone.
        """
        if n_components < 1:
            raise ValueError(f"n_components = {n_components}: must be >= 1")
        noise = torch.stack([torch.rand(n_components, 2, generator=g) for g in streams.generators])
        means = (2 * noise - 1) * spread  # [T, K, 2]
        t = len(streams)
        m = cls(torch.zeros(t, n_components), means, torch.full((t, n_components, 2), math.log(init_std)))
        return m if n_settings is None else m.expand_settings(n_settings)

    @property
    def n_components(self) -> int:
        return self.logits.shape[-1]

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[:-1]

    def parameters(self) -> list[torch.Tensor]:
        return [self.logits, self.means, self.log_std]

    def requires_grad_(self, flag: bool = True) -> Mixture:
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def detach(self) -> Mixture:
        """A frozen copy (no graph, own storage)."""
        return Mixture(*(p.detach().clone() for p in self.parameters()))

    def trainable(self) -> Mixture:
        """A trainable copy: own storage, requires_grad."""
        return self.detach().requires_grad_(True)

    def to(self, dtype: torch.dtype) -> Mixture:
        if self.logits.dtype == dtype:
            return self
        return Mixture(*(p.to(dtype) for p in self.parameters()))

    def expand_settings(self, n_settings: int) -> Mixture:
        """Repeat a [trials]-batched model along a new leading settings axis: [n_settings, trials]."""
        return Mixture(*(p.unsqueeze(0).expand(n_settings, *p.shape).clone() for p in self.parameters()))

    def index(self, *idx) -> Mixture:
        """Select along the batch dims, e.g. `m.index(2)` (setting 2) or `m.index(slice(None), [0])`."""
        return Mixture(*(p.detach()[idx].clone() for p in self.parameters()))

    @staticmethod
    def stack(mixtures: list[Mixture], dim: int = 0) -> Mixture:
        """Stack mixtures of the same shape along a new batch dimension."""
        return Mixture(*(torch.stack([getattr(m, name).detach() for m in mixtures], dim)
                         for name in ("logits", "means", "log_std")))

    # -- densities ----------------------------------------------------------------------------------
    def log_weights(self, beta_kd: float | torch.Tensor = 1.0) -> torch.Tensor:
        """log α_k(β_KD) = log softmax(β_KD · log α_k) (App. A.1, eq. 7); β_KD = 1 gives log α_k."""
        log_w = torch.log_softmax(self.logits, -1)
        if isinstance(beta_kd, (int, float)) and beta_kd == 1.0:
            return log_w
        return torch.log_softmax(beta_kd * log_w, -1)

    def weights(self, beta_kd: float | torch.Tensor = 1.0) -> torch.Tensor:
        return self.log_weights(beta_kd).exp()

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x | μ_k, diag σ_k²) for every component: x [*B', n, 2] -> [*B'', n, K]."""
        log_std = self.log_std.clamp(min=MIN_LOG_STD)
        z = (x.unsqueeze(-2) - self.means.unsqueeze(-3)) / log_std.exp().unsqueeze(-3)
        return -0.5 * (z * z).sum(-1) - log_std.sum(-1).unsqueeze(-2) - LOG_2PI

    def log_prob(self, x: torch.Tensor, beta_kd: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Exact log density: x [*B', n, 2] -> [*broadcast(B, B'), n]."""
        return torch.logsumexp(self.component_log_prob(x) + self.log_weights(beta_kd).unsqueeze(-2), -1)

    # -- sampling -----------------------------------------------------------------------------------
    def sample(self, n: int, streams: TrialStreams, beta_kd: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Ancestral samples [*broadcast(B, [trials]), n, 2], no gradient.

        The trial axis of the noise aligns with the last batch axis of the model (or broadcasts
        against a model with no batch dims, such as p*). `beta_kd` samples from the sharpened
        weights α^β / Σ α^β, as the KD teacher does (App. A.1).
        """
        with torch.no_grad():
            noise = streams.draw(n, self.means.dtype)  # [T, n, 3]
            u = torch.special.ndtr(noise[..., 0])  # uniform [T, n]
            cdf = self.weights(beta_kd).cumsum(-1).unsqueeze(-2)  # [*B, 1, K]
            component = (u.unsqueeze(-1) > cdf[..., :-1]).sum(-1)  # [*, T, n]
            one_hot = torch.nn.functional.one_hot(component, self.n_components).to(self.means.dtype)
            mean = one_hot @ self.means  # one-hot matmul picks a row exactly
            std = one_hot @ self.log_std.clamp(min=MIN_LOG_STD).exp()
            return mean + std * noise[..., 1:]

    def __repr__(self) -> str:
        return f"Mixture(batch={tuple(self.batch_shape)}, K={self.n_components}, dtype={self.logits.dtype})"
