"""Knowledge distillation with β_KD weight sharpening (App. A.1 eq. 7, after Cha & Cho 2025).

The teacher is sampled with its mixture weights sharpened, α'_k(β_KD) = α'^β_KD_k / Σ_j α'^β_KD_j,
and a smaller student is fit to those samples by maximum likelihood (`sft.fit`). β_KD > 1 starves
the teacher's light components, so the student spends its few components on the dominant modes and
loses recall: the low-recall p'' (K-A's reference) and the last step of Pipeline A-K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .mixture import Mixture
from .sft import SFTConfig, fit


def sharpen_weights(weights: torch.Tensor, beta_kd: float) -> torch.Tensor:
    """α^β / Σ α^β along the last axis (eq. 7), computed in log space."""
    if not beta_kd > 0:
        raise ValueError(f"beta_kd = {beta_kd!r}: must be > 0 (the paper uses >= 1)")
    return torch.softmax(beta_kd * torch.log(weights), -1)


@dataclass(frozen=True)
class KDConfig:
    """Distillation of a teacher into a smaller mixture (App. A.1)."""

    n_components: int = 4
    """Student components (p''_4 or p''_3, App. A.1 N_FINAL_MODES)."""
    beta_kd: float = 1.25
    """Teacher weight sharpening β_KD (App. A.1: 1.25 in the sweeps; Figure 1 uses 10)."""
    n_iterations: int = 2000
    """Adam steps (App. A.1: N_ITERATIONS_SFT_KD = 2000)."""
    batch_size: int = 256
    """Teacher samples per step and row."""
    learning_rate: float = 1e-2
    """Adam learning rate."""

    def __post_init__(self):
        if not self.beta_kd > 0:
            raise ValueError(f"beta_kd = {self.beta_kd!r}: must be > 0 (the paper uses >= 1)")
        self.sft()  # validates the remaining fields

    def sft(self) -> SFTConfig:
        return SFTConfig(n_components=self.n_components, n_iterations=self.n_iterations,
                         batch_size=self.batch_size, learning_rate=self.learning_rate)


def distil(teacher: Mixture, config: KDConfig, seed: int, trials: list[int] | range, stage: str = "kd",
           progress: bool = False) -> Mixture:
    """Distil every row of `teacher` into a `config.n_components` student (rows = settings × trials).

    `teacher` rows are ordered setting-major over `trials`; each student row draws its initial means
    and its teacher samples from its trial's streams.
    """
    if len(trials) == 0 or teacher.n_rows % len(trials):
        raise ValueError(f"distil: teacher has {teacher.n_rows} rows, not a multiple of {len(trials)} trials")
    if config.n_components > teacher.n_components:
        raise ValueError(f"n_components = {config.n_components}: the student must not have more components "
                         f"than its teacher ({teacher.n_components})")
    sharp = teacher.sharpened(config.beta_kd)
    return fit(lambda n, gens: sharp.sample(n, gens), config.sft(), seed, stage, trials,
               n_settings=teacher.n_rows // len(trials), progress=progress)
