"""Tables and verdicts of the LLM chapters, computed from `run_pipelines` metrics (no models needed)."""

from __future__ import annotations

import pandas as pd


def summarise(metrics: pd.DataFrame, columns=("reward", "target_precision", "precision", "recall")) -> pd.DataFrame:
    """Mean ± std over seeds per (algorithm, pipeline, model, final_tau)."""
    keys = ["algorithm", "pipeline", "model", "final_tau"]
    present = [c for c in (*columns, "target_mass") if c in metrics.columns]
    grouped = metrics.fillna({"final_tau": -1.0}).groupby(keys, sort=False)[present]
    table = grouped.agg(["mean", "std"]).reset_index()
    table["final_tau"] = table["final_tau"].replace(-1.0, float("nan"))
    return table


def final_tau_effects(metrics: pd.DataFrame, main_tau: float) -> pd.DataFrame:
    """App. D from a `run_pipelines` table: how A-K's final model moves when its last KD runs at another τ.

    One row per (algorithm, final_tau ≠ main_tau): the change in mean precision and recall against
    `main_tau` (means over seeds), the seed std of both at that τ, and `paper_direction`, true where the
    change is the trade App. D reports (a lower τ gains precision and loses recall; a higher τ the reverse).
    """
    finals = metrics[metrics["model"] == "p''_AK"]
    rows = []
    for algorithm, part in finals.groupby("algorithm", sort=False):
        base = part[part["final_tau"] == main_tau]
        for tau, at in part[part["final_tau"] != main_tau].groupby("final_tau", sort=False):
            d_precision = at["precision"].mean() - base["precision"].mean()
            d_recall = at["recall"].mean() - base["recall"].mean()
            lower = tau < main_tau
            rows.append({"algorithm": algorithm, "final_tau": tau, "d_precision": d_precision, "d_recall": d_recall,
                         "precision_std": at["precision"].std(), "recall_std": at["recall"].std(),
                         "paper_direction": bool((d_precision > 0 and d_recall < 0) if lower
                                                 else (d_precision < 0 and d_recall > 0))})
    return pd.DataFrame(rows, columns=["algorithm", "final_tau", "d_precision", "d_recall", "precision_std",
                                       "recall_std", "paper_direction"])
