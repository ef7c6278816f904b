"""K-A, A-K and Align → PAD side by side on the same trials and budgets, cached with the MoG chapters' models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ...mog.algorithms import ALGORITHMS, find_algorithm
from ...mog.alignment import check_betas
from ...mog.experiments import cached_from_references
from ...mog.groundtruth import SINGLE_TARGET, check_targets
from ...mog.metrics import labelled_evaluation
from ...mog.mixture import Mixture
from ...mog.pipelines import Setup, align, distil_rows, high_recall, low_recall
from ...validation import require_int
from .training import PADConfig, align_then_pad


@dataclass(frozen=True)
class Comparison:
    """K-A, A-K and Align → PAD for one alignment algorithm and β, on the same trials and budgets."""

    algorithm: str = "ppo"
    """Alignment algorithm of the first stage: a name of `alignkd.mog.algorithms.ALGORITHMS`."""
    beta: float = 1.0
    """Alignment KL/DPO coefficient β (the paper's iteration sweeps use 1.0)."""
    align_iterations: int = 400
    """Alignment iterations, the same for K-A and for the shared first stage of A-K and Align → PAD."""
    targets: tuple[int, ...] = SINGLE_TARGET
    """Target modes of the oracle reward (single: (7,), multi: (7, 6))."""
    pad: tuple[PADConfig, ...] = (PADConfig(),)
    """One Align → PAD variant per entry (e.g. fresh and p'' initialisations, PPD and VPD)."""
    pad_checkpoints: tuple[int, ...] = ()
    """Extra PAD iterations at which to score the students (a trajectory)."""

    def __post_init__(self):
        find_algorithm(self.algorithm)
        check_betas([self.beta])
        check_targets(self.targets)
        require_int(self, "align_iterations")
        if not self.pad:
            raise ValueError("pad: need at least one PADConfig")


def pad_label(config: PADConfig) -> str:
    """A short name for a PAD variant, e.g. "A→PAD (ppd, fresh)"."""
    group = f", groups of {config.group_size}" if config.group_size not in (None, config.n_responses) else ""
    return f"A→PAD ({config.loss}, {config.student_init}{group})"


def run_comparison(comparison: Comparison, setup: Setup, p_high: Mixture | None = None,
                   p_low: Mixture | None = None, progress: bool = False) -> pd.DataFrame:
    """Score p', p'', K-A, A-K, p'_AK and every Align → PAD variant with the four metrics.

    One line per (pipeline, iterations, trial). The alignment stages use the same stage names as
    `pipelines.run_sweep`, so K-A, A-K and p'_AK are the very models of the algorithm chapters for the
    same setup, β and budget. PAD lines have `iterations` = PAD steps (a trajectory if
    `pad_checkpoints` is set); the others have the alignment budget (0 for p', p'').
    """
    p_high = high_recall(setup, progress) if p_high is None else p_high
    p_low = low_recall(p_high, setup, progress=progress) if p_low is None else p_low
    config = ALGORITHMS[comparison.algorithm].config(n_iterations=comparison.align_iterations)
    stage_targets = f"{comparison.algorithm}/{comparison.targets}"
    frames = []

    def score(models: Mixture, pipeline: str, iterations: int) -> None:
        frames.append(labelled_evaluation(models, comparison.targets, setup.seed, setup.trials, setup.eval_samples,
                                          {"pipeline": pipeline, "iterations": iterations}))

    score(p_high, "p'", 0)
    score(p_low, "p''", 0)
    k_a = align(comparison.algorithm, p_low, setup, [comparison.beta], config, comparison.targets, stage="K-A",
                progress=progress)[comparison.align_iterations]
    score(k_a, "K-A", comparison.align_iterations)
    aligned = align(comparison.algorithm, p_high, setup, [comparison.beta], config, comparison.targets, stage="A-K",
                    progress=progress)[comparison.align_iterations]
    score(aligned, "A (p'_AK)", comparison.align_iterations)
    score(distil_rows(aligned, setup, stage=stage_targets, progress=progress), "A-K", comparison.align_iterations)
    for pad_config in comparison.pad:
        # One stage name for every variant: their fresh initialisations and sampling uniforms are shared
        # (common random numbers), so variant-to-variant differences are not sampling noise.
        run = align_then_pad(aligned, setup, pad_config, p_low, comparison.pad_checkpoints,
                             stage=stage_targets, progress=progress)
        for iteration, student in sorted(run.snapshots.items()):
            score(student, pad_label(pad_config), iteration)
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(0, "beta", comparison.beta)
    frame.insert(0, "algorithm", comparison.algorithm)
    return frame


def cached_comparison(store, setup: Setup, comparison: Comparison, progress: bool = True) -> pd.DataFrame:
    """`run_comparison` through the result store, with p' and p'' shared with the MoG chapters' cache
    (a `seconds` column holds its wall time when it was computed)."""
    return cached_from_references(store, setup, "pad_mog_comparison", "comparison", comparison,
                                  lambda p_high, p_low: run_comparison(comparison, setup, p_high, p_low, progress),
                                  progress)
