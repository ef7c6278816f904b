"""Cached MoG computations for the chapters: every result goes through `alignkd.cache.ResultStore`.

A re-run with unchanged parameters reads the parquet tables back and recomputes nothing; a changed
parameter changes the configuration hash of exactly the results it affects (p' depends only on the
SFT settings, p'' also on the KD settings, a sweep on everything).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pandas as pd

from ..cache import ResultStore
from .coverage import target_coverage
from .groundtruth import SINGLE_TARGET
from .metrics import evaluate
from .mixture import Mixture
from .pipelines import Setup, Sweep, high_recall, low_recall, run_sweep


def _setup_key(setup: Setup, *fields: str) -> dict:
    return {name: getattr(setup, name) for name in ("n_trials", "trial_ids", "seed", "mode_spacing", *fields)}


def cached_high_recall(store: ResultStore, setup: Setup, progress: bool = True) -> Mixture:
    """p' per trial, cached under `mog_p_prime`."""
    key = {"model": "p_prime", **_setup_key(setup, "n_high_recall", "sft_iterations")}
    frame = store.frame("mog_models", key, lambda: high_recall(setup, progress).to_frame(trial=setup.trials))
    return Mixture.from_frame(frame)


def cached_low_recall(store: ResultStore, setup: Setup, n_components: int | None = None,
                      beta_kd: float | None = None, progress: bool = True) -> Mixture:
    """p'' per trial (p' distilled with β_KD), cached under `mog_models`."""
    n_components = n_components or setup.n_low_recall
    beta_kd = setup.beta_kd if beta_kd is None else float(beta_kd)
    key = {"model": "p_low", "n_components": n_components, "beta_kd": beta_kd,
           **_setup_key(setup, "n_high_recall", "sft_iterations", "kd_iterations")}

    def compute() -> pd.DataFrame:
        teacher = cached_high_recall(store, setup, progress)
        return low_recall(teacher, setup, n_components, beta_kd, progress).to_frame(trial=setup.trials)

    return Mixture.from_frame(store.frame("mog_models", key, compute))


def cached_from_references(store: ResultStore, setup: Setup, name: str, spec_key: str, spec,
                           run: Callable[[Mixture, Mixture], pd.DataFrame], progress: bool = True) -> pd.DataFrame:
    """`run(p', p'')` cached under `name`, keyed by the setup and `spec` (a dataclass, stored as `spec_key`).

    p' and p'' come from the shared model cache, so every chapter starts from the same references. The
    table carries a `seconds` column: the wall time of `run` when it was computed.
    """
    key = {"setup": dataclasses.asdict(setup), spec_key: dataclasses.asdict(spec)}

    def compute() -> pd.DataFrame:
        p_high = cached_high_recall(store, setup, progress)
        p_low = cached_low_recall(store, setup, progress=progress)
        start = time.perf_counter()
        frame = run(p_high, p_low)
        frame["seconds"] = time.perf_counter() - start
        return frame

    return store.frame(name, key, compute)


def cached_sweep(store: ResultStore, setup: Setup, sweep: Sweep, progress: bool = True) -> pd.DataFrame:
    """Both pipelines of one algorithm's sweep (see `pipelines.run_sweep`), cached under `mog_sweep`."""

    def run(p_high: Mixture, p_low: Mixture) -> pd.DataFrame:
        frame = run_sweep(sweep, setup, p_high, p_low, progress)
        frame["targets"] = "+".join(str(t) for t in sweep.targets)
        return frame

    return cached_from_references(store, setup, "mog_sweep", "sweep", sweep, run, progress)


def score_models(setup: Setup, models: dict[str, Mixture], targets=SINGLE_TARGET) -> pd.DataFrame:
    """The four metrics of every trial of each named model (one row per trial), with a `model` column."""
    return pd.concat([evaluate(m, targets, setup.seed, setup.trials, setup.eval_samples, setup.mode_spacing)
                      .assign(model=name) for name, m in models.items()], ignore_index=True)


def models_coverage(setup: Setup, models: dict[str, Mixture], targets=SINGLE_TARGET) -> pd.DataFrame:
    """`coverage.target_coverage` of every trial of each named model, with a `model` column."""
    return pd.concat([target_coverage(m, targets, setup.seed, setup.trials, setup.eval_samples, setup.mode_spacing)
                      .assign(model=name) for name, m in models.items()], ignore_index=True)
