"""The paper's MoG claims as data: A-K minus K-A, paired by trial, with intervals and verdicts (§4.1, App. B).

The paper claims that Pipeline A-K reaches a higher Final Average Reward and Target Precision than
Pipeline K-A, with lower across-trial variance. Trial t of both pipelines starts from the same p' and
draws from the same streams, so every comparison pairs the pipelines by trial (see `alignkd.stats`):

- `claims_table`: per (algorithm, targets, panel, β, iterations) and metric, A-K − K-A with a paired
  bootstrap 95 % interval and the Brown–Forsythe test of equal spread, with a verdict for each
  ("holds", "does not hold", or "partly" when the interval contains 0 / the test is not significant);
- `pooled_claims`: per algorithm and metric, the per-trial mean over all settings of the sweep of
  A-K − K-A, with its interval: one number per claim instead of "higher in k of n settings";
- `claims_summary`: per algorithm and metric, the pooled interval and how many settings' verdicts say
  holds / does not hold, for the mean and for the spread;
- `pipeline_summary` and `algorithm_verdict`: what the chapters print under each figure.
"""

from __future__ import annotations

import pandas as pd

from ..stats import compare_paired, format_interval, mean_verdict
from .algorithms import ALGORITHMS
from .metrics import METRIC_LABELS, METRICS

KEYS = ["algorithm", "targets", "panel", "beta", "iterations"]
CLAIM_METRICS = ("reward", "target_precision")


def _pipelines(results: pd.DataFrame) -> pd.DataFrame:
    return results[results.pipeline.isin(["A-K", "K-A"])]


def claims_table(results: pd.DataFrame, metrics=METRICS, seed: int = 0) -> pd.DataFrame:
    """One line per setting and metric: A-K − K-A (`diff`, `ci_low`, `ci_high`), spreads, Brown–Forsythe."""
    data = _pipelines(results)
    return pd.concat([compare_paired(data, KEYS, m, seed=seed).assign(metric=m) for m in metrics], ignore_index=True)


def pooled_claims(results: pd.DataFrame, metrics=CLAIM_METRICS, seed: int = 0) -> pd.DataFrame:
    """Per algorithm, targets and metric: A-K − K-A of each trial's mean over every setting of the sweep."""
    per_trial = _pipelines(results).groupby(["algorithm", "targets", "pipeline", "trial"], as_index=False)[
        list(metrics)].mean()
    frames = [compare_paired(per_trial, ["algorithm", "targets"], m, seed=seed).assign(metric=m) for m in metrics]
    return pd.concat(frames, ignore_index=True)[["algorithm", "targets", "metric", "n", "diff", "ci_low", "ci_high",
                                                 "mean_verdict"]]


def claims_summary(table: pd.DataFrame, pooled: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm and metric: the pooled interval and the settings' verdict counts (mean and spread)."""
    counts = table.groupby(["algorithm", "targets", "metric"]).agg(
        settings=("diff", "size"),
        mean_holds=("mean_verdict", lambda v: int((v == "holds").sum())),
        mean_reversed=("mean_verdict", lambda v: int((v == "does not hold").sum())),
        spread_holds=("spread_verdict", lambda v: int((v == "holds").sum())),
        spread_reversed=("spread_verdict", lambda v: int((v == "does not hold").sum())),
    ).reset_index()
    out = pooled.rename(columns={"diff": "pooled_diff", "mean_verdict": "pooled_verdict"}).merge(
        counts, on=["algorithm", "targets", "metric"], how="inner")
    return out


def pipeline_summary(results: pd.DataFrame, algorithm: str) -> pd.DataFrame:
    """Mean and standard deviation over trials of reward, target precision and recall, per setting and pipeline."""
    part = _pipelines(results[results.algorithm == algorithm])
    return part.groupby(["panel", "beta", "iterations", "pipeline"])[list(METRICS[:3])].agg(["mean", "std"]).unstack(
        "pipeline")


def algorithm_verdict(table: pd.DataFrame, pooled: pd.DataFrame, algorithm: str) -> str:
    """The sentence under an algorithm's figure: pooled intervals, per-setting verdicts, spread tests."""
    parts = []
    for metric in CLAIM_METRICS:
        row = pooled[(pooled.algorithm == algorithm) & (pooled.metric == metric)].iloc[0]
        sub = table[(table.algorithm == algorithm) & (table.metric == metric)]
        n = len(sub)
        parts.append(
            f"{METRIC_LABELS[metric]}: A-K − K-A averaged over the {n} settings = "
            f"{format_interval(row['diff'], row.ci_low, row.ci_high)} (95 % paired bootstrap over {row.n} trials; "
            f"{mean_verdict(row.ci_low, row.ci_high)}); per setting the interval lies above 0 in "
            f"{(sub.mean_verdict == 'holds').sum()}/{n}, below 0 in {(sub.mean_verdict == 'does not hold').sum()}/{n}. "
            f"Lower variance (Brown–Forsythe, 5 %): A-K significantly steadier in {(sub.spread_verdict == 'holds').sum()}"
            f"/{n} settings, K-A in {(sub.spread_verdict == 'does not hold').sum()}/{n}.")
    return f"{ALGORITHMS[algorithm].label}. " + " ".join(parts)


def overall_verdict(pooled: pd.DataFrame, table: pd.DataFrame) -> str:
    """One sentence per claim across all algorithms of a chapter."""
    lines = []
    for metric in CLAIM_METRICS:
        rows = pooled[pooled.metric == metric]
        sub = table[table.metric == metric]
        per_algo = "; ".join(f"{ALGORITHMS[r.algorithm].label} {format_interval(r.diff, r.ci_low, r.ci_high)} "
                             f"({r.mean_verdict})" for r in rows.itertuples())
        lines.append(f"A-K − K-A in {METRIC_LABELS[metric]} (per-trial mean over each sweep, 95 % interval): {per_algo}. "
                     f"Lower A-K variance significant (Brown–Forsythe, 5 %) in {(sub.spread_verdict == 'holds').sum()} "
                     f"of {len(sub)} settings, the reverse in {(sub.spread_verdict == 'does not hold').sum()}.")
    return "\n".join(lines)




def sweep_claim_rows(table: pd.DataFrame, pooled: pd.DataFrame, chapter: str, figures: dict[str, str],
                     paper_figures: dict[str, str], coverage_note: str = "") -> pd.DataFrame:
    """Rows for `alignkd.claims.record`, per algorithm: higher reward, higher target precision (pooled interval)
    and lower reward variance (Brown–Forsythe verdicts over the settings). `coverage_note` is appended to
    every reason (what K-A's reference covers decides what the comparison can show)."""
    from ..claims import verdict_from_interval, verdict_from_settings

    note = f"; {coverage_note}" if coverage_note else ""
    rows = []
    for algorithm in dict.fromkeys(pooled.algorithm):
        label, figure = ALGORITHMS[algorithm].label, figures.get(algorithm, "")
        paper = paper_figures.get(algorithm, "the paper")
        for metric in CLAIM_METRICS:
            r = pooled[(pooled.algorithm == algorithm) & (pooled.metric == metric)].iloc[0]
            verdict, reason = verdict_from_interval(r.ci_low, r.ci_high, "> 0")
            rows.append(dict(chapter=chapter, claim_id=f"{algorithm}-{metric}",
                             claim=f"{label}: A-K reaches a higher {METRIC_LABELS[metric]} than K-A (per-trial mean of "
                                   f"A-K − K-A over the sweep's settings)",
                             paper_value=f"A-K > K-A ({paper})", ours=r["diff"], low=r.ci_low, high=r.ci_high,
                             verdict=verdict, reason=reason + note, figure=figure))
        sub = table[(table.algorithm == algorithm) & (table.metric == "reward")]
        verdict, reason = verdict_from_settings(sub.spread_verdict.tolist(), "settings (Brown–Forsythe, 5 %)")
        rows.append(dict(chapter=chapter, claim_id=f"{algorithm}-reward-variance",
                         claim=f"{label}: A-K's final reward varies less across trials than K-A's",
                         paper_value=f"lower variance for A-K ({paper})", ours=float((sub.sd_a - sub.sd_b).median()),
                         low=None, high=None, verdict=verdict,
                         reason=f"ours = median over settings of sd(A-K) − sd(K-A); {reason}{note}", figure=figure))
    return pd.DataFrame(rows)


__all__ = ["KEYS", "CLAIM_METRICS", "claims_table", "pooled_claims", "claims_summary", "pipeline_summary",
           "algorithm_verdict", "overall_verdict", "sweep_claim_rows"]
