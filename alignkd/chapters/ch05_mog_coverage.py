"""Chapter 05 (`notebooks/05_mog_coverage.md`): the MoG gap as a function of the reference's coverage.

`configs` is the one place that turns the chapter's parameters into the testbed's `Setup` and `CoverageStudy`,
so chapter 07 reuses exactly chapter 05's cached references (`profile_call(configs, CHAPTER, profile)`).
"""

from __future__ import annotations

from ..mog.coverage_study import CoverageStudy
from ..mog.pipelines import Setup

PARAMETER_FUNCTIONS = ("configs",)  # what takes this chapter's parameters, by name (tests/test_chapters_layer.py)
CHAPTER = "05_mog_coverage"


def configs(*, n_trials: int, seed: int, beta_kds: list[float], n_low_recalls: list[int], algorithms: list[str],
            beta: float, align_iterations: int, min_lost: int, sft_iterations: int, kd_iterations: int,
            eval_samples: int) -> tuple[Setup, CoverageStudy]:
    """The chapter's Setup (p', p'' with the largest n_low_recall) and CoverageStudy (the β_KD × n_low_recall grid)."""
    setup = Setup(n_trials=n_trials, seed=seed, n_low_recall=max(n_low_recalls), sft_iterations=sft_iterations,
                  kd_iterations=kd_iterations, eval_samples=eval_samples)
    study = CoverageStudy(beta_kds=tuple(beta_kds), n_low_recalls=tuple(n_low_recalls), algorithms=tuple(algorithms),
                          beta=beta, n_iterations=align_iterations, min_lost=min_lost)
    study.check_setup(setup)
    return setup, study
