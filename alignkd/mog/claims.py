"""The paper's MoG claims as data: A-K minus K-A per algorithm and setting (§4.1, App. B).

The paper claims that Pipeline A-K reaches a higher Final Average Reward and Target Precision than
Pipeline K-A, with lower across-trial variance. For every (algorithm, targets, panel, β, iterations)
`claims_table` gives

    Δmean_<metric> = mean_AK − mean_KA         Δvar_<metric> = var_AK − var_KA

for reward, target precision, overall recall and overall precision (variance over trials, ddof = 1),
and whether each part of the claim holds there. Positive Δmean and negative Δvar favour A-K.
"""

from __future__ import annotations

import pandas as pd

from .metrics import METRICS

KEYS = ["algorithm", "targets", "panel", "beta", "iterations"]


def claims_table(results: pd.DataFrame) -> pd.DataFrame:
    """One line per setting with Δmean and Δvar (A-K − K-A) of each metric and the claim checks."""
    data = results[results.pipeline.isin(["A-K", "K-A"])]
    stats = data.groupby(KEYS + ["pipeline"])[list(METRICS)].agg(["mean", "var"])
    ak = stats.xs("A-K", level="pipeline")
    ka = stats.xs("K-A", level="pipeline")
    table = pd.DataFrame(index=ak.index)
    for metric in METRICS:
        table[f"dmean_{metric}"] = ak[(metric, "mean")] - ka[(metric, "mean")]
        table[f"dvar_{metric}"] = ak[(metric, "var")] - ka[(metric, "var")]
    table["ak_higher_reward"] = table.dmean_reward > 0
    table["ak_higher_target_precision"] = table.dmean_target_precision > 0
    table["ak_lower_reward_variance"] = table.dvar_reward < 0
    table["ak_lower_target_precision_variance"] = table.dvar_target_precision < 0
    return table.reset_index()


CHECKS = ["ak_higher_reward", "ak_higher_target_precision", "ak_lower_reward_variance",
          "ak_lower_target_precision_variance"]


def claims_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm (and targets): the fraction of settings in which each part of the claim holds."""
    summary = table.groupby(["algorithm", "targets"])[CHECKS].mean()
    summary["settings"] = table.groupby(["algorithm", "targets"]).size()
    return summary.reset_index()
