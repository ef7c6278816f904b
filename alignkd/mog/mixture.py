"""A batch of 2-D Gaussian mixtures with exact log-densities and per-row random streams.

One `Mixture` holds B independent models (rows): every trial of every sweep setting of one
experiment, flattened as row = setting · n_trials + trial. Each row has K components with a
mixture logit, a mean and a per-axis log standard deviation (diagonal covariance), so the tensors are

    logits [B, K]    means [B, K, 2]    log_scales [B, K, 2]

`log_prob` is exact (logsumexp over components). Because the rows never interact (losses are summed
over rows, Adam is elementwise), training B rows at once gives each row exactly the update it would
get alone; and because every row draws its randomness from its own `torch.Generator`, a row of a
batched run reproduces a lone run started from the same seed (tested in tests/test_mog_algorithms.py).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import pandas as pd
import torch

LOG_SCALE_MIN = math.log(1e-3)  # keeps a collapsing component's density finite


def stream_seed(seed: int, stage: str, trial: int) -> int:
    """The seed of one trial's random stream for one stage of an experiment.

    It depends on (seed, stage, trial) only, not on the sweep setting: the rows of different β of the
    same trial share their random numbers (common random numbers make setting-to-setting comparisons
    less noisy), and a trial run alone reproduces its row of a batched run.
    """
    digest = hashlib.sha256(f"alignkd.mog/{seed}/{stage}/{trial}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Streams(list):
    """One `torch.Generator` per row that hands out uniforms several steps at a time.

    A training loop asks every row's stream for the same shape at every step. Calling `torch.rand` once
    per row and step costs a Python round trip per row; a `Streams` instead draws `steps` steps' worth per
    row in one call (the number doubles while the same shape keeps being asked for, up to `MAX_STEPS` and a
    buffer of `MAX_BUFFER` numbers) and serves them one step at a time. Drawing [steps, *shape] from a
    generator gives exactly the numbers of `steps` successive [*shape] draws (tested), so results are
    identical to drawing step by step. If another shape is asked for while drawn numbers are left, every
    generator is put back to where it was and advanced past the numbers used, so that stays exact too.
    """

    MAX_STEPS = 64
    MAX_BUFFER = 1 << 22  # float32 numbers held ahead (16 MiB)

    def __init__(self, gens):
        super().__init__(gens)
        self._shape: tuple[int, ...] | None = None
        self._buffer: torch.Tensor | None = None  # [B, steps, *shape]
        self._next = 0
        self._states: list[torch.Tensor] = []

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniforms [B, *shape], row b from generator b, the next step of each row's sequence."""
        buffered = self._buffer is not None and self._next < self._buffer.shape[1]
        if buffered and shape == self._shape:
            self._next += 1
            return self._buffer[:, self._next - 1]
        if buffered:
            self._rewind()
        numel = max(1, math.prod(shape)) * max(1, len(self))
        same = shape == self._shape and self._buffer is not None
        steps = min(2 * self._buffer.shape[1] if same else 1, self.MAX_STEPS, max(1, self.MAX_BUFFER // numel))
        self._states = [g.get_state() for g in self] if steps > 1 else []
        self._buffer = torch.stack([torch.rand((steps, *shape), generator=g) for g in self])
        self._shape, self._next = shape, 1
        return self._buffer[:, 0]

    def _rewind(self) -> None:
        used = self._next
        for g, state in zip(self, self._states):
            g.set_state(state)
            torch.rand((used, *self._shape), generator=g)
        self._buffer = None


def generators(seed: int, stage: str, trials: list[int] | range, n_settings: int = 1) -> Streams:
    """One stream per row, rows ordered setting-major: [setting 0 trials..., setting 1 trials..., ...]."""
    rows = []
    for _ in range(n_settings):
        for trial in trials:
            rows.append(torch.Generator().manual_seed(stream_seed(seed, stage, trial)))
    return Streams(rows)


def uniforms(gens: list[torch.Generator], *shape: int) -> torch.Tensor:
    """Uniforms [B, *shape] in [0, 1), row b drawn from gens[b] (several steps at a time for `Streams`)."""
    if isinstance(gens, Streams):
        return gens.draw(tuple(shape))
    return torch.stack([torch.rand(shape, generator=g) for g in gens])


def standard_normal(u: torch.Tensor) -> torch.Tensor:
    """Φ⁻¹(u): standard normals from uniforms in (0, 1), through √2·erfinv(2u − 1).

    The same function as torch.special.ndtri, about 3× cheaper on the CPU; u is kept 1e-7 away
    from 0 and 1 so that no draw is infinite. In float32 it agrees with ndtri to 2e-4 inside
    ±3.7σ and to 1 % out to the clamp at ±5.2σ.
    """
    return math.sqrt(2.0) * torch.erfinv(2 * u.clamp(1e-7, 1 - 1e-7) - 1)


@dataclass
class Mixture:
    """B independent K-component diagonal Gaussian mixtures in 2-D (see the module docstring)."""

    logits: torch.Tensor  # [B, K] unnormalised log mixture weights
    means: torch.Tensor  # [B, K, 2]
    log_scales: torch.Tensor  # [B, K, 2] log standard deviations per axis

    def __post_init__(self):
        b, k = self.logits.shape
        if self.means.shape != (b, k, 2) or self.log_scales.shape != (b, k, 2):
            raise ValueError(f"Mixture: shapes disagree: logits {tuple(self.logits.shape)}, means "
                             f"{tuple(self.means.shape)}, log_scales {tuple(self.log_scales.shape)}")

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def random_init(cls, n_components: int, gens: list[torch.Generator], spread: float = 2.0,
                    scale: float = 0.5) -> "Mixture":
        """Equal weights, means uniform in [−spread, spread]², standard deviation `scale`; one row per generator."""
        if n_components < 1:
            raise ValueError(f"n_components = {n_components}: must be >= 1")
        u = uniforms(gens, n_components, 2)
        b = len(gens)
        return cls(
            logits=torch.zeros(b, n_components),
            means=(2 * u - 1) * spread,
            log_scales=torch.full((b, n_components, 2), math.log(scale)),
        )

    def parameters(self) -> list[torch.Tensor]:
        return [self.logits, self.means, self.log_scales]

    def trainable(self) -> "Mixture":
        """A detached copy whose tensors require gradients (the original is left untouched)."""
        copy = self.detach()
        for p in copy.parameters():
            p.requires_grad_(True)
        return copy

    def detach(self) -> "Mixture":
        return Mixture(*(p.detach().clone() for p in self.parameters()))

    def repeat(self, n_settings: int) -> "Mixture":
        """Stack `n_settings` copies of all rows, setting-major (row = setting · B + b)."""
        return Mixture(*(p.detach().repeat(n_settings, *([1] * (p.dim() - 1))) for p in self.parameters()))

    def rows(self, index) -> "Mixture":
        """The sub-batch of the given rows (a slice, list or boolean mask)."""
        return Mixture(*(p[index] for p in self.parameters()))

    @staticmethod
    def cat(mixtures: list["Mixture"]) -> "Mixture":
        """Concatenate batches with the same K along rows."""
        return Mixture(*(torch.cat(ps) for ps in zip(*(m.parameters() for m in mixtures))))

    # --- shape -------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return self.logits.shape[0]

    @property
    def n_components(self) -> int:
        return self.logits.shape[1]

    # --- densities and samples ----------------------------------------------------------------
    def log_weights(self) -> torch.Tensor:
        """[B, K] normalised log mixture weights."""
        return torch.log_softmax(self.logits, -1)

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, -1)

    def sharpened(self, beta_kd: float) -> "Mixture":
        """The same components with weights α_k^β / Σ_j α_j^β (App. A.1 eq. 7), as a detached copy."""
        if not beta_kd > 0:
            raise ValueError(f"beta_kd = {beta_kd!r}: must be > 0 (the paper uses >= 1)")
        return Mixture(beta_kd * self.log_weights().detach(), self.means.detach().clone(),
                       self.log_scales.detach().clone())

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log α_k + log N(x; μ_k, diag σ_k²) for x [B, N, 2] -> [B, K, N] (components before samples).

        The Gaussian exponent is a quadratic form in x, so it is one batched matmul of the weights
        W [B, K, 5] built from (α, μ, σ) with the features [x₁², x₂², x₁, x₂, 1] laid out [B, 5, N].
        Putting the components first matters on the CPU: the [K, 5] × [5, N] product and the
        reduction over K then run along contiguous samples, about 10× faster, forward and backward,
        than the [N, 5] × [5, K] layout or broadcasting [B, N, K, 2] differences (exact up to float32
        rounding: checked against `log_prob_direct` in the tests).
        """
        log_scales = self.log_scales.clamp(min=LOG_SCALE_MIN)
        inv_var = torch.exp(-2 * log_scales)  # [B, K, 2]
        const = (-0.5 * (self.means ** 2 * inv_var).sum(-1) - log_scales.sum(-1) - math.log(2 * math.pi)
                 + self.log_weights())  # [B, K]
        weights = torch.cat([-0.5 * inv_var, self.means * inv_var, const.unsqueeze(-1)], -1)  # [B, K, 5]
        xt = x.transpose(1, 2)  # [B, 2, N]
        features = torch.cat([xt * xt, xt, torch.ones_like(xt[:, :1])], 1)  # [B, 5, N]
        return torch.bmm(weights, features)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log q(x) for x [B, N, 2] -> [B, N] (row b scores x[b]).

        The logsumexp over K is written out: on one CPU thread torch.logsumexp over the middle dimension of
        [B, K, N] costs about 1.5× this form forward and backward (its inf handling), the largest single cost
        of a training step."""
        components = self.component_log_prob(x)
        top = components.detach().amax(1, keepdim=True)  # any constant is exact; the max keeps exp() finite
        return (components - top).exp().sum(1).log() + top.squeeze(1)

    def log_prob_direct(self, x: torch.Tensor) -> torch.Tensor:
        """The same density by broadcasting differences (slower; the reference for tests)."""
        log_scales = self.log_scales.clamp(min=LOG_SCALE_MIN)
        z = (x.unsqueeze(-2) - self.means.unsqueeze(1)) * torch.exp(-log_scales).unsqueeze(1)
        comp = -0.5 * (z ** 2).sum(-1) - log_scales.sum(-1).unsqueeze(1) - math.log(2 * math.pi)
        return torch.logsumexp(comp + self.log_weights().unsqueeze(1), -1)

    def sample_from_uniforms(self, u: torch.Tensor) -> torch.Tensor:
        """Samples [B, N, 2] from uniforms [B, N, 3]: inverse-CDF component choice + Gaussian noise.

        Sampling is not differentiated (the alignment algorithms use score-function gradients), so
        the result is detached. The chosen components' (μ, σ) are looked up in one flat table
        [B·K, 4], which is several times cheaper on the CPU than gathering means and scales apart.
        """
        with torch.no_grad():
            b, k = self.logits.shape
            cdf = torch.cumsum(self.weights(), -1)[:, :-1]  # [B, K-1]
            comp = (u[:, None, :, 0] > cdf[:, :, None]).sum(1)  # [B, N]: #{j : cdf_j < u}
            table = torch.cat([self.means, self.log_scales.clamp(min=LOG_SCALE_MIN).exp()], -1).reshape(b * k, 4)
            rows = comp + k * torch.arange(b).unsqueeze(1)
            picked = table.index_select(0, rows.reshape(-1)).reshape(b, -1, 4)  # [B, N, 4]: μ, σ of each draw
            return torch.addcmul(picked[..., :2], picked[..., 2:], standard_normal(u[..., 1:]))

    def sample(self, n: int, gens: list[torch.Generator]) -> torch.Tensor:
        """n samples per row [B, n, 2], row b drawn with gens[b]."""
        if len(gens) != self.n_rows:
            raise ValueError(f"sample: {len(gens)} generators for {self.n_rows} rows")
        return self.sample_from_uniforms(uniforms(gens, n, 3))

    # --- storage -----------------------------------------------------------------------------
    def to_frame(self, **labels) -> pd.DataFrame:
        """One line per (row, component); extra keyword columns (e.g. trial=[...] per row) are kept."""
        b, k = self.logits.shape
        m, s, w = self.means.detach(), self.log_scales.detach(), self.logits.detach()
        frame = pd.DataFrame({
            "row": torch.arange(b).repeat_interleave(k).numpy(),
            "component": torch.arange(k).repeat(b).numpy(),
            "logit": w.reshape(-1).numpy(),
            "mean_x": m[..., 0].reshape(-1).numpy(), "mean_y": m[..., 1].reshape(-1).numpy(),
            "log_scale_x": s[..., 0].reshape(-1).numpy(), "log_scale_y": s[..., 1].reshape(-1).numpy(),
        })
        for name, per_row in labels.items():
            frame[name] = pd.Series(list(per_row)).repeat(k).to_numpy()
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Mixture":
        """Inverse of `to_frame` (rows and components in the stored order)."""
        frame = frame.sort_values(["row", "component"])
        b, k = frame["row"].nunique(), frame["component"].nunique()

        def col(*names):
            return torch.tensor(frame[list(names)].to_numpy(), dtype=torch.float32).reshape(b, k, len(names))

        return cls(col("logit")[..., 0], col("mean_x", "mean_y"), col("log_scale_x", "log_scale_y"))
