"""Numbers of the LLM pipelines, computed from `cached_run_pipelines` metrics (no models needed).

    table = summarise(metrics)                    # mean ± std over seeds per algorithm, pipeline, model
    gaps = final_gaps(metrics, main_tau)          # A-K vs K-A final models per algorithm and metric
    effects = final_tau_effects(metrics, 0.95)    # App. D: A-K's final model at another KD temperature

Chapter 06 puts them into words (`alignkd.chapters.ch06_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..stats import paired_on_index


def summarise(metrics: pd.DataFrame, columns=("reward", "target_precision", "overall_precision", "overall_recall")
              ) -> pd.DataFrame:
    """Mean ± std over seeds per (algorithm, pipeline, model, final_tau)."""
    keys = ["algorithm", "pipeline", "model", "final_tau"]
    present = [c for c in (*columns, "target_share") if c in metrics.columns]
    grouped = metrics.fillna({"final_tau": -1.0}).groupby(keys, sort=False)[present]
    table = grouped.agg(["mean", "std"]).reset_index()
    table["final_tau"] = table["final_tau"].replace(-1.0, float("nan"))
    return table


def final_tau_effects(metrics: pd.DataFrame, main_tau: float) -> pd.DataFrame:
    """App. D from a `cached_run_pipelines` table: how A-K's final model moves when its last KD runs at another τ.

    One row per (algorithm, final_tau ≠ main_tau): the change in mean precision and recall against
    `main_tau` (means over seeds), the seed std of both at that τ, and `paper_direction`, true where the
    change is the trade App. D reports (a lower τ gains precision and loses recall; a higher τ the reverse).
    """
    finals = metrics[metrics["model"] == "p''_AK"]
    rows = []
    for algorithm, part in finals.groupby("algorithm", sort=False):
        base = part[part["final_tau"] == main_tau]
        for tau, at in part[part["final_tau"] != main_tau].groupby("final_tau", sort=False):
            d_precision = at["overall_precision"].mean() - base["overall_precision"].mean()
            d_recall = at["overall_recall"].mean() - base["overall_recall"].mean()
            lower = tau < main_tau
            rows.append({"algorithm": algorithm, "final_tau": tau, "d_precision": d_precision, "d_recall": d_recall,
                         "precision_std": at["overall_precision"].std(), "recall_std": at["overall_recall"].std(),
                         "paper_direction": bool((d_precision > 0 and d_recall < 0) if lower
                                                 else (d_precision < 0 and d_recall > 0))})
    return pd.DataFrame(rows, columns=["algorithm", "final_tau", "d_precision", "d_recall", "precision_std",
                                       "recall_std", "paper_direction"])


# --------------------------------------------------------------------------- A-K against K-A, final models

FINAL_MODELS = {"A-K": "p''_AK", "K-A": "p''_KA"}
FINAL_COLUMNS = ("reward", "target_precision", "overall_recall", "response_length", "target_share")


class FinalGap(NamedTuple):
    """A-K's final model (p''_AK at the main final τ) against K-A's (p''_KA) in one metric, over seeds."""

    algorithm: str
    metric: str
    ak_mean: float
    ak_std: float
    ka_mean: float
    ka_std: float
    n_pairs: int
    """seeds present in both pipelines (the pairs of the bootstrap)."""
    gap: float
    """mean over paired seeds of A-K − K-A."""
    low: float
    high: float
    """95 % paired-bootstrap interval of `gap` over seeds (`alignkd.stats.paired_bootstrap`); NaN below 2 pairs."""


def final_values(metrics: pd.DataFrame, algorithm: str, pipeline: str, column: str, main_tau: float) -> pd.Series:
    """Per-seed `column` of a pipeline's final model (A-K's at `main_tau`), indexed by seed."""
    part = metrics[(metrics["algorithm"] == algorithm) & (metrics["model"] == FINAL_MODELS[pipeline])]
    if pipeline == "A-K":
        part = part[np.isclose(part["final_tau"].astype(float), main_tau)]
    return part.set_index("seed")[column].sort_index()


def final_gaps(metrics: pd.DataFrame, main_tau: float, columns: Sequence[str] = FINAL_COLUMNS) -> pd.DataFrame:
    """One `FinalGap` row per (algorithm, metric) of a `cached_run_pipelines` table, for the metrics it has.

    Means and stds (ddof 1) are over each pipeline's own seeds; the gap and its interval pair the seeds
    both pipelines ran (seed s of A-K and of K-A share their alignment seed)."""
    rows = []
    for algorithm in metrics["algorithm"].unique():
        for column in (c for c in columns if c in metrics.columns):
            ak = final_values(metrics, algorithm, "A-K", column, main_tau)
            ka = final_values(metrics, algorithm, "K-A", column, main_tau)
            interval, n_pairs = paired_on_index(ak, ka)
            rows.append(FinalGap(algorithm, column, ak.mean(), ak.std(), ka.mean(), ka.std(), n_pairs, *interval))
    return pd.DataFrame(rows, columns=FinalGap._fields)


def final_gap(gaps: pd.DataFrame, algorithm: str, metric: str) -> FinalGap:
    """The `FinalGap` of one algorithm and metric from a `final_gaps` table."""
    row = gaps[(gaps["algorithm"] == algorithm) & (gaps["metric"] == metric)]
    if len(row) != 1:
        raise KeyError(f"final_gaps has no row for algorithm {algorithm!r}, metric {metric!r}")
    return FinalGap(*row.iloc[0])
