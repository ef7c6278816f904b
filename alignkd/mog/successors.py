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
  tables and never computes a missing one.

Every function returns numbers, a sentence built from them, or claim rows for `alignkd.claims.record_rows`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..cache import ResultStore
from ..stats import Interval, format_interval, paired_on_index, unpaired_bootstrap
from .algorithms import ALGORITHMS
from .coverage_study import CoverageStudy, with_coverage
from .pipelines import Setup

CHAPTER_05 = "05_mog_coverage"
CHAPTER_07 = "07_pad"
FOLLOWING_ALGORITHMS = ("dpo_online", "kto", "simpo")
NOT_TESTABLE = "not testable here"

# What the paper says for each algorithm whose gap is asked to follow coverage (chapter 05's claim rows).
FOLLOWING_PAPER_VALUES = {
    "dpo_online": "the DPO trap: the reference offset saturates the gradient as π_ref(y*) → 0 (§3.4, eq. 2)",
    "kto": "persists in KTO whenever a low-recall reference is retained (§3.4)",
    "simpo": "not in the paper: SimPO is the reference-free control (no reference offset to saturate)",
}


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


def _label(algorithm: str) -> str:
    return ALGORITHMS[algorithm].label if algorithm in ALGORITHMS else algorithm


def following_sentences(rows: Sequence[Following], metric_label: str = "final reward") -> list[str]:
    """One sentence per algorithm, from the numbers of `coverage_following`."""
    lines = []
    for r in rows:
        label = _label(r.algorithm)
        if r.reason:
            lines.append(f"{label}: not testable here ({r.reason}).")
            continue
        d = r.difference
        reading = ("the gap is larger where the reference lost the target (it follows coverage)"
                   if d.low > 0 else "the gap is smaller where the reference lost the target (it runs against "
                                     "coverage)" if d.high < 0 else
                   "the interval contains 0, so these trials cannot tell whether the gap follows coverage")
        lines.append(f"{label} at β_KD {r.beta_kd:g}: A-K − K-A in {metric_label} is {r.lost_gap:+.2f} on the "
                     f"{r.n_lost} lost-target trials and {r.kept_gap:+.2f} on the {r.n_kept} kept-target trials; "
                     f"lost − kept {format_interval(d.estimate, d.low, d.high)}; {reading}.")
    return lines


def following_claim_rows(rows: Sequence[Following], n_low_recall: int, chapter: str = CHAPTER_05,
                         figure: str = "fig-05-gap") -> pd.DataFrame:
    """Rows for `alignkd.claims.record`: per algorithm, "<alg>-gap-follows-coverage" (lost − kept > 0)."""
    from ..claims import verdict_from_interval

    out = []
    for r in rows:
        label = _label(r.algorithm)
        row = dict(chapter=chapter, claim_id=f"{r.algorithm}-gap-follows-coverage",
                   claim=f"{label}: the A-K − K-A reward gap follows the reference's coverage, larger on trials "
                         f"whose p''_{n_low_recall} lost the target than on those that kept it",
                   paper_value=FOLLOWING_PAPER_VALUES.get(r.algorithm, "not in the paper"), figure=figure)
        if r.reason:
            out.append({**row, "ours": None, "low": None, "high": None, "verdict": NOT_TESTABLE, "reason": r.reason})
            continue
        d = r.difference
        verdict, reason = verdict_from_interval(d.low, d.high, "> 0")
        out.append({**row, "ours": d.estimate, "low": d.low, "high": d.high, "verdict": verdict,
                    "reason": f"{reason}; lost − kept at β_KD {r.beta_kd:g}, unpaired bootstrap over "
                              f"{r.n_lost} lost and {r.n_kept} kept trials"})
    return pd.DataFrame(out)


def coverage_study_key(setup: Setup, study: CoverageStudy, algorithm: str) -> dict:
    """The cache key under which `coverage_study.cached_study` saves one algorithm's table (kept in step with it
    by `tests/test_mog_successors.py`)."""
    return {"setup": dataclasses.asdict(setup), "study": {**dataclasses.asdict(study), "algorithms": [algorithm]}}


def cached_coverage_results(store: ResultStore, setup: Setup, study: CoverageStudy,
                            algorithms: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Chapter 05's cached per-trial results of `algorithms`, read back and never computed.

    Returns (results of the algorithms found, in `cached_study`'s layout; names of those chapter 05 has not
    cached under this setup and study).
    """
    frames, missing = [], []
    for algorithm in algorithms:
        key = coverage_study_key(setup, study, algorithm)
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


ESCAPE_PAPER_VALUE = ("not in the paper: §3.4's learning trap needs a reference and SimPO has none; its on-policy "
                      "samples still come from the low-recall model (the sampling trap)")
RECALL_PAPER_VALUE = "not in the paper: the reverse KL to the reference is what keeps the aligned model's recall"


def escape_sentence(escape: Escape, trap: str) -> str:
    """What the numbers of `simpo_escape` say, in words (`trap` names the β_KD and p'')."""
    if escape.reason:
        return f"SimPO against the trap: not testable here ({escape.reason})."
    g, c = escape.gap, escape.recall_cost
    if not np.isfinite(g.low):
        reading = "no interval, so no reading"
    elif g.low > 0:
        reading = "A-K still leads: SimPO does not escape the trap by dropping the reference"
    elif g.high < 0:
        reading = "K-A overtakes A-K: SimPO escapes the trap and more"
    else:
        reading = ("the interval contains 0: A-K's lead is not established, as an escape would have it, but these "
                   "trials cannot show an escape either")
    if not np.isfinite(c.low):
        cost = "no interval"
    elif c.high < 0:
        cost = "dropping the reference costs recall"
    elif c.low > 0:
        cost = "SimPO's K-A keeps more recall than DPO's"
    else:
        cost = "the interval contains 0: no recall cost is shown"
    return (f"On the {escape.n_trials} trials whose reference lost the target ({trap}): SimPO's A-K − K-A in final "
            f"reward is {format_interval(g.estimate, g.low, g.high)} ({reading}). SimPO's K-A minus on-policy DPO's "
            f"K-A in overall recall is {format_interval(c.estimate, c.low, c.high)} over {escape.n_recall} trials "
            f"({cost}).")


def escape_claim_rows(escape: Escape, trap: str, chapter: str = CHAPTER_07, figure: str = "") -> pd.DataFrame:
    """Rows for `alignkd.claims.record`: "the A-K advantage persists under SimPO" (> 0: SimPO does not escape) and
    "dropping the reference costs recall" (< 0), on the trials whose reference lost the target.

    An escape is a gap at or below zero, a claim no interval containing zero can confirm; so the row claims the
    falsifiable side, that A-K's lead persists: "holds" means no escape, "does not hold" means K-A overtook A-K,
    "partly" means these trials cannot tell.
    """
    from ..claims import verdict_from_interval

    claims = [
        ("simpo-ak-advantage-persists",
         "SimPO (no reference) does not escape the trap: A-K still ends with a higher final reward than K-A on the "
         "trials whose K-A reference lost the target", ESCAPE_PAPER_VALUE, escape.gap, "> 0", escape.n_trials,
         "paired by trial"),
        ("simpo-recall-cost",
         "Dropping the reference costs recall: SimPO's K-A ends with a lower overall recall than on-policy DPO's K-A "
         "on the trials whose reference lost the target", RECALL_PAPER_VALUE, escape.recall_cost, "< 0",
         escape.n_recall, "paired by trial"),
    ]
    rows = []
    for claim_id, claim, paper, interval, claimed, n, how in claims:
        row = dict(chapter=chapter, claim_id=claim_id, claim=claim, paper_value=paper, figure=figure)
        if escape.reason or not (np.isfinite(interval.low) and np.isfinite(interval.high)):
            rows.append({**row, "ours": None, "low": None, "high": None, "verdict": NOT_TESTABLE,
                         "reason": escape.reason or "the bootstrap gave no finite interval"})
            continue
        verdict, reason = verdict_from_interval(interval.low, interval.high, claimed)
        rows.append({**row, "ours": interval.estimate, "low": interval.low, "high": interval.high, "verdict": verdict,
                     "reason": f"{reason}; {how}, {n} trials whose p'' lost the target at {trap}"})
    return pd.DataFrame(rows)


__all__ = ["FOLLOWING_ALGORITHMS", "unpaired_bootstrap", "trial_gaps", "Following", "coverage_following",
           "following_sentences", "following_claim_rows", "coverage_study_key", "cached_coverage_results", "Escape",
           "simpo_escape", "escape_sentence", "escape_claim_rows"]
