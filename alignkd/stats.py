"""Statistics for the book's claims, from scipy.stats: paired bootstrap intervals and Brown–Forsythe.

The paper's MoG claims compare two pipelines run on the same trials (trial t of K-A and of A-K start from
the same p' and draw from the same random streams), so their difference is paired by trial seed:

- `paired_bootstrap(a, b)`: mean of a − b with a 95 % bootstrap interval that resamples *trials*
  (scipy.stats.bootstrap, paired=True, BCa; percentile where BCa is undefined, e.g. constant differences);
- `brown_forsythe(a, b)`: Levene's test with the median as centre (scipy.stats.levene(center="median")),
  robust to the skewed, bounded rewards here, for "A-K has the lower across-trial variance";
- `compare_paired(frame, ...)`: both per group of a long results table, with a verdict per claim.

Verdicts use the book's words (`alignkd.claims`): "holds" when the 95 % interval lies above zero (or the
variance test rejects equal spread at 5 % with A-K the steadier), "does not hold" when it lies on the other
side, "partly" when the data neither confirm nor refute the claim, "not testable here" without data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 4999
ALPHA = 0.05


class Interval(NamedTuple):
    estimate: float
    low: float
    high: float


def _mean_difference(a, b, axis=-1):
    return np.mean(a - b, axis=axis)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """mean(a − b) and its bootstrap interval, resampling the pairs (a_i, b_i) together."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap: a and b must be 1-D of one length (got {a.shape} and {b.shape})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence!r}: must lie in (0, 1)")
    estimate = float(np.mean(a - b)) if len(a) else float("nan")
    if len(a) < 2:
        return Interval(estimate, float("nan"), float("nan"))
    if np.ptp(a - b) == 0:  # every resample gives the same mean
        return Interval(estimate, estimate, estimate)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's degenerate-distribution warning: we fall back instead
            result = stats.bootstrap((a, b), _mean_difference, paired=True, vectorized=True, method=method,
                                     confidence_level=confidence, n_resamples=n_resamples,
                                     rng=np.random.default_rng(seed))
        low, high = result.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return Interval(estimate, float(low), float(high))
    return Interval(estimate, float("nan"), float("nan"))


def _difference_of_means(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def unpaired_bootstrap(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                       n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """mean(a) − mean(b) of two independent samples and its bootstrap interval, resampling each sample on its own.

    scipy.stats.bootstrap (BCa, percentile where BCa is undefined) with a fixed seed, so the interval is
    deterministic. Fewer than two values in either sample: no interval (NaN ends).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"unpaired_bootstrap: a and b must be 1-D (got shapes {a.shape} and {b.shape})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence!r}: must lie in (0, 1)")
    estimate = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return Interval(estimate, float("nan"), float("nan"))
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # every resample gives the same difference
        return Interval(estimate, estimate, estimate)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's degenerate-distribution warning: we fall back instead
            result = stats.bootstrap((a, b), _difference_of_means, paired=False, vectorized=True, method=method,
                                           confidence_level=confidence, n_resamples=n_resamples,
                                           rng=np.random.default_rng(seed))
        low, high = result.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            # BCa on a handful of trials can put the interval beside its own estimate; that is no interval of it
            if low <= estimate <= high:
                return Interval(estimate, float(low), float(high))
    return Interval(estimate, float("nan"), float("nan"))


def paired_on_index(a: pd.Series, b: pd.Series, seed: int = 0) -> tuple[Interval, int]:
    """`paired_bootstrap` of two Series paired on their index (e.g. seed): labels in both with values in both
    are the pairs. Returns the interval and the number of pairs."""
    paired = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    return paired_bootstrap(paired["a"].to_numpy(), paired["b"].to_numpy(), seed=seed), len(paired)


class SpreadTest(NamedTuple):
    sd_a: float
    sd_b: float
    statistic: float
    p_value: float


def brown_forsythe(a: Sequence[float], b: Sequence[float]) -> SpreadTest:
    """Standard deviations (ddof 1) of a and b and the Brown–Forsythe test of equal spread (two-sided)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    sd_a = float(np.std(a, ddof=1)) if len(a) > 1 else float("nan")
    sd_b = float(np.std(b, ddof=1)) if len(b) > 1 else float("nan")
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return SpreadTest(sd_a, sd_b, float("nan"), float("nan"))
    with np.errstate(divide="ignore", invalid="ignore"):  # e.g. two trials per group: no spread of the spreads
        statistic, p_value = stats.levene(a, b, center="median")
    if not np.isfinite(p_value):
        return SpreadTest(sd_a, sd_b, float("nan"), float("nan"))
    return SpreadTest(sd_a, sd_b, float(statistic), float(p_value))


def mean_verdict(low: float, high: float) -> str:
    """"holds" if the interval of a − b lies above 0, "does not hold" below, else "partly"."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "not testable here"
    return "holds" if low > 0 else "does not hold" if high < 0 else "partly"


def spread_verdict(test: SpreadTest, alpha: float = ALPHA) -> str:
    """"holds" if a is significantly steadier than b, "does not hold" if significantly less steady, else "partly"."""
    if not np.isfinite(test.p_value):
        return "not testable here"
    if test.p_value >= alpha:
        return "partly"
    return "holds" if test.sd_a < test.sd_b else "does not hold"


def compare_paired(frame: pd.DataFrame, by: Sequence[str], value: str, group: str = "pipeline",
                   a: str = "A-K", b: str = "K-A", pair_on: str = "trial", seed: int = 0,
                   confidence: float = CONFIDENCE) -> pd.DataFrame:
    """a − b of `value` per group `by`, paired on `pair_on`: means, bootstrap interval, spreads, Brown–Forsythe.

    Rows of `frame` with `group` == a and == b are matched on (`by`, `pair_on`); unpaired trials are
    dropped. One line per group with columns n, mean_a, mean_b, diff, ci_low, ci_high, sd_a, sd_b,
    bf_stat, bf_p, mean_verdict, spread_verdict (a and b keep their names in the column labels' docs only).
    """
    by = list(by)
    side = {name: frame[frame[group] == name].set_index(by + [pair_on])[value] for name in (a, b)}
    paired = pd.concat(side, axis=1, join="inner").dropna()
    lines = []
    for key, part in (paired.groupby(level=by, sort=False) if by else [((), paired)]):
        interval = paired_bootstrap(part[a].to_numpy(), part[b].to_numpy(), confidence, seed=seed)
        spread = brown_forsythe(part[a].to_numpy(), part[b].to_numpy())
        key = key if isinstance(key, tuple) else (key,)
        lines.append({**dict(zip(by, key)), "n": len(part), "mean_a": part[a].mean(), "mean_b": part[b].mean(),
                      "diff": interval.estimate, "ci_low": interval.low, "ci_high": interval.high,
                      "sd_a": spread.sd_a, "sd_b": spread.sd_b, "bf_stat": spread.statistic, "bf_p": spread.p_value,
                      "mean_verdict": mean_verdict(interval.low, interval.high),
                      "spread_verdict": spread_verdict(spread)})
    return pd.DataFrame(lines)


def format_interval(estimate: float, low: float, high: float, digits: int = 2) -> str:
    """"+0.23 [+0.10, +0.35]"."""
    return f"{estimate:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


__all__ = ["CONFIDENCE", "Interval", "SpreadTest", "paired_bootstrap", "paired_on_index", "brown_forsythe", "mean_verdict",
           "spread_verdict", "compare_paired", "format_interval"]
