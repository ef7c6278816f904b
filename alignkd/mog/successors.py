"""The paper's named successors on the MoG testbed: KTO keeps the reference, SimPO drops it (SPEC §8).

§3.4 says the offset-induced saturation "persists in DPO-style objectives like KTO whenever a fixed low-recall
reference is retained". Chapter 05 already runs every algorithm of the registry on every trial and β_KD, so the
two questions here read its results and compute nothing new:

- chapter 05, `coverage_following`: does the A-K − K-A reward gap follow the reference's coverage, i.e. is it
  larger on the trials whose p'' lost the target than on those that kept it? The strata hold different trials,
  so the difference of their mean gaps gets an *unpaired* bootstrap over trials (`unpaired_bootstrap`);
- chapter 07, `simpo_escape`: on the trials whose reference lost the target, is SimPO's A-K − K-A gap still
  positive (paired by trial), and what does dropping the reference cost K-A in overall recall against
  on-policy DPO's K-A on the same trials (paired by trial)? `cached_coverage_results` reads chapter 05's cached
  tables under `coverage_study.study_key`, the key chapter 05 saves them under, and never computes a missing one.

Every function returns numbers; the sentences and claim rows built from them are the chapters' own
(`alignkd.chapters.ch05_mog_coverage`, `alignkd.chapters.ch07_pad`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..cache import ResultStore
from ..stats import Interval, paired_on_index, unpaired_bootstrap
from .coverage_study import CoverageStudy, study_key, with_coverage
from .pipelines import Setup

FOLLOWING_ALGORITHMS = ("dpo_online", "kto", "simpo")


def trial_gaps(data: pd.DataFrame, metric: str = "reward", beta_kd: float | None = None,
               n_low_recall: int | None = None, a: str = "A-K", b: str = "K-A") -> pd.DataFrame:
    """Per (algorithm, n_low_recall, β_KD, trial): `a` − `b` of `metric`, paired by trial, with the trial's `lost`.

    `data` is chapter 05's `coverage_study.with_coverage(...)` frame (optionally restricted to one β_KD and
    n_low_recall). Trials present in only one pipeline are dropped.
    """
    keys = ["algorithm", "n_low_recall", "beta_kd", "trial"]
    part = data
    if beta_kd is not None:
        part = part[part.beta_kd == beta_kd]
    if n_low_recall is not None:
        part = part[part.n_low_recall == n_low_recall]
    side = {name: part[part.pipeline == name].set_index(keys) for name in (a, b)}
    paired = pd.concat({"a": side[a][metric], "b": side[b][metric], "lost": side[b]["lost"]}, axis=1,
                       join="inner").dropna(subset=["a", "b"])
    return paired.assign(gap=paired["a"] - paired["b"])[["gap", "lost"]].reset_index()


class Following(NamedTuple):
    """One algorithm's answer to "does the gap follow coverage?" at one β_KD."""

    algorithm: str
    beta_kd: float
    n_lost: int
    n_kept: int
    lost_gap: float
    kept_gap: float
    difference: Interval  # lost − kept, unpaired bootstrap over trials
    reason: str  # why no interval ("" if there is one)


def coverage_following(data: pd.DataFrame, beta_kd: float | None, n_low_recall: int,
                       algorithms: Sequence[str] = FOLLOWING_ALGORITHMS, metric: str = "reward",
                       seed: int = 0) -> list[Following]:
    """Per algorithm: mean A-K − K-A of `metric` on the lost-target and kept-target trials at `beta_kd`, and
    lost − kept with an unpaired bootstrap 95 % interval (the strata hold different trials).

    An algorithm that chapter 05 did not run, a missing β_KD (`None`: no trap β_KD in the grid) or a stratum of
    fewer than two trials gives no interval, and `reason` says which.
    """
    gaps = trial_gaps(data, metric, beta_kd, n_low_recall) if beta_kd is not None else None
    out = []
    for algorithm in algorithms:
        nan = float("nan")
        if beta_kd is None:
            out.append(Following(algorithm, nan, 0, 0, nan, nan, Interval(nan, nan, nan),
                                 "no β_KD of chapter 05's grid gives at least two trials whose p'' lost the target"))
            continue
        mine = gaps[gaps.algorithm == algorithm]
        if mine.empty:
            out.append(Following(algorithm, beta_kd, 0, 0, nan, nan, Interval(nan, nan, nan),
                                 f"{algorithm} is not among the algorithms this run of chapter 05 aligned"))
            continue
        lost, kept = mine.gap[mine.lost.astype(bool)].to_numpy(), mine.gap[~mine.lost.astype(bool)].to_numpy()
        difference = unpaired_bootstrap(lost, kept, seed=seed)
        short = [f"{len(v)} {name}-target trial{'s' if len(v) != 1 else ''}"
                 for name, v in (("lost", lost), ("kept", kept)) if len(v) < 2]
        reason = (f"fewer than two trials in a stratum at β_KD {beta_kd:g} ({', '.join(short)})" if short else
                  "" if np.isfinite(difference.low) else "the bootstrap gave no finite interval")
        out.append(Following(algorithm, float(beta_kd), len(lost), len(kept),
                             float(lost.mean()) if len(lost) else nan, float(kept.mean()) if len(kept) else nan,
                             difference, reason))
    return out


def cached_coverage_results(store: ResultStore, setup: Setup, study: CoverageStudy,
                            algorithms: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Chapter 05's cached per-trial results of `algorithms`, read back and never computed.

    Returns (results of the algorithms found, in `cached_study`'s layout; names of those chapter 05 has not
    cached under this setup and study).
    """
    frames, missing = [], []
    for algorithm in algorithms:
        key = study_key(setup, study, algorithm)
        if not store.has("mog_coverage_study", key):
            missing.append(algorithm)
            continue

        def refuse(algorithm=algorithm):
            raise RuntimeError(f"chapter 05's table for {algorithm} vanished while being read")

        frames.append(store.frame("mog_coverage_study", key, refuse))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), missing


class Escape(NamedTuple):
    """SimPO on the trials whose reference lost the target (chapter 07)."""

    n_trials: int
    gap: Interval  # SimPO A-K − SimPO K-A in final reward, paired by trial
    recall_cost: Interval  # SimPO K-A − on-policy DPO K-A in overall recall, paired by trial
    n_recall: int  # trials paired in `recall_cost`
    reason: str  # why not testable ("" if testable)


def simpo_escape(results: pd.DataFrame, coverage: pd.DataFrame, beta_kd: float | None, n_low_recall: int,
                 missing: Sequence[str] = (), seed: int = 0) -> Escape:
    """SimPO's A-K − K-A final reward and the recall SimPO's K-A gives up against on-policy DPO's K-A, both
    paired by trial, on the trials whose p''_{n_low_recall} lost the target at `beta_kd` (chapter 05's trap).

    `results`, `coverage`: chapter 05's cached results and reference coverage; `missing`: algorithms chapter 05
    has not cached (from `cached_coverage_results`).
    """
    nan = Interval(float("nan"), float("nan"), float("nan"))
    needed = [a for a in ("simpo", "dpo_online") if a in missing or results.empty or a not in set(results.algorithm)]
    if needed:
        return Escape(0, nan, nan, 0, f"chapter 05 has no cached results for {' and '.join(needed)} at this profile "
                                      f"(add them to its `algorithms` and run it first)")
    if beta_kd is None:
        return Escape(0, nan, nan, 0, "no β_KD of chapter 05's grid gives at least two trials whose p'' lost the "
                                      "target")
    data = with_coverage(results, coverage)
    lost = data[(data.beta_kd == beta_kd) & (data.n_low_recall == n_low_recall) & data.lost.astype(bool)]
    n_lost = lost.trial.nunique()
    if n_lost < 2:
        return Escape(n_lost, nan, nan, 0, f"only {n_lost} trial{'s' if n_lost != 1 else ''} lost the target at "
                                           f"β_KD {beta_kd:g}; at least two are needed")

    def series(algorithm: str, pipeline: str, metric: str) -> pd.Series:
        part = lost[(lost.algorithm == algorithm) & (lost.pipeline == pipeline)]
        return part.set_index("trial")[metric]

    gap, n_gap = paired_on_index(series("simpo", "A-K", "reward"), series("simpo", "K-A", "reward"), seed=seed)
    cost, n_cost = paired_on_index(series("simpo", "K-A", "overall_recall"),
                                   series("dpo_online", "K-A", "overall_recall"), seed=seed)
    reason = "" if n_gap >= 2 and n_cost >= 2 else "fewer than two trials pair SimPO's pipelines with DPO's K-A"
    return Escape(n_gap, gap, cost, n_cost, reason)


__all__ = ["FOLLOWING_ALGORITHMS", "unpaired_bootstrap", "trial_gaps", "Following", "coverage_following",
           "cached_coverage_results", "Escape", "simpo_escape"]
