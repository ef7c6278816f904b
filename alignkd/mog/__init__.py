"""The Mixture-of-Gaussians testbed (paper §4.1, App. A–B): exact ground truth, a batched mixture
model, SFT/KD, the alignment algorithms (by name in `algorithms.ALGORITHMS`), the K-A and A-K
pipelines and the four metrics.

Public building blocks (stable; the PAD chapter builds on them):

- `groundtruth`: MODE_CENTERS, mode_centers(spacing), SINGLE_TARGET, MULTI_TARGET, log_p_star, log_p_target, reward,
  sample_p_star, nearest_mode (every density and sampler takes the grid's `spacing`, App. A.1: 1.5)
- `mixture.Mixture` (rows = settings × trials; log_prob, sample, sharpened, repeat, rows, cat, to/from_frame),
  `mixture.generators(seed, stage, trials, n_settings)`, `mixture.uniforms`
- `sft.SFTConfig`, `sft.fit`, `sft.fit_p_star`; `kd.KDConfig`, `kd.distil`, `kd.sharpen_weights`
- `metrics.evaluate(q, targets, seed, trials, n_samples)` -> DataFrame of the four metrics
- `coverage.target_coverage`: share of a model's samples nearest the target and its density there (lost: < 1 %)
- `pipelines.Setup` (incl. mode_spacing, trial_ids), `high_recall`, `low_recall`, `align`, `align_rows`,
  `distil_rows`, `Sweep`, `run_sweep`
- `coverage_study` (chapter 05), `geometry` (p*'s Target Precision at any spacing, Figure 1); the chapters'
  words (claims, verdicts, tables) live in `alignkd.chapters`
"""

from . import (algorithms, alignment, dpo_offline, dpo_online, groundtruth, grpo, kd, kto, metrics, mixture, pipelines,
               ppo, sft, simpo)
from .algorithms import ALGORITHMS
from .mixture import Mixture
from .pipelines import Setup, Sweep, align, distil_rows, high_recall, low_recall, run_sweep

__all__ = ["ALGORITHMS", "Mixture", "Setup", "Sweep", "align", "distil_rows", "high_recall", "low_recall",
           "run_sweep", "algorithms", "alignment", "dpo_offline", "dpo_online", "groundtruth", "grpo", "kd", "kto",
           "metrics", "mixture", "pipelines", "ppo", "sft", "simpo"]
