"""Tables, sentences and claims of the LLM chapter, computed from `cached_run_pipelines` metrics (no models needed).

    gaps = final_gaps(metrics, main_tau)          # A-K vs K-A final models per algorithm and metric
    print("\n".join(final_sentences(gaps, premise)))
    record_claims(store, gaps, premise)           # the chapter's rows of the claims page

Chapter 06 only orchestrates and plots: every number it prints and every verdict it writes is made here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import claims
from ..claims import verdict_from_interval
from ..stats import format_interval, paired_on_index


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
CHAPTER = "06_llm"
NO_PREMISE = "Premise: not measurable on this ground truth."


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


def no_topics_note(what: str, ground_truth: str) -> str:
    """Why a figure or table that needs topic labels is absent on a ground truth without them."""
    return (f"Not shown: {what}. It needs topic labels, which only the synthetic language (markov_mixture) "
            f"has; on {ground_truth} no sample can be assigned to the rare target.")


def premise_note(premise) -> str:
    """The premise's verdict paragraph (`PremiseCheck.verdict`), or why there is none (`premise` None)."""
    return premise.verdict() if premise is not None else NO_PREMISE


def _premise_failed(premise) -> bool:
    return premise is not None and not premise.passed


def final_sentences(gaps: pd.DataFrame, premise=None) -> list[str]:
    """Per algorithm: A-K's and K-A's final reward, target precision, recall and length, and whether they
    support §4.2's claim that A-K ends with the higher reward *and* target precision."""
    lines = []
    for algorithm in gaps["algorithm"].unique():
        reward, target, recall, length = (final_gap(gaps, algorithm, m) for m in
                                          ("reward", "target_precision", "overall_recall", "response_length"))
        supports = reward.ak_mean > reward.ka_mean and target.ak_mean > target.ka_mean
        verdict = "supports" if supports else "does not support"
        if _premise_failed(premise):
            verdict += " (on references that FAIL the premise, so it is no test of the paper's mechanism)"
        lines.append(f"{algorithm}: final reward A-K {reward.ak_mean:.3f} ± {reward.ak_std:.3f} vs K-A "
                     f"{reward.ka_mean:.3f} ± {reward.ka_std:.3f} (paired gap "
                     f"{format_interval(reward.gap, reward.low, reward.high, 3)}); target precision "
                     f"{target.ak_mean:.3f} vs {target.ka_mean:.3f}; recall {recall.ak_mean:.3f} vs "
                     f"{recall.ka_mean:.3f}; mean length {length.ak_mean:.1f} vs {length.ka_mean:.1f} tokens. "
                     f"This {verdict} the paper's claim that A-K ends with higher reward and target precision (§4.2).")
    return lines


def target_share_sentences(gaps: pd.DataFrame) -> list[str]:
    """Per algorithm: the share of the target topic in the final models' samples (synthetic language only)."""
    return [f"{row.algorithm}: share of the target topic after alignment, K-A {row.ka_mean:.1%}, A-K {row.ak_mean:.1%}."
            for row in gaps[gaps["metric"] == "target_share"].itertuples()]


CLAIMED_METRICS = {"reward": "mean reward", "target_precision": "target precision"}  # Figure 5's two claims


def reward_claim(gaps: pd.DataFrame, algorithm: str, premise=None, metric: str = "reward") -> dict:
    """The arguments of `claims.record` for "A-K ends with a higher <metric> than K-A" (`algorithm`; `metric` one
    of `CLAIMED_METRICS`: Figure 5 claims both the reward and the target precision)."""
    gap = final_gap(gaps, algorithm, metric)
    if _premise_failed(premise):
        numbers = dict(ours=None, low=None, high=None, verdict="not testable here",
                       reason="the references fail the premise: " + premise.verdict())
    elif math.isnan(gap.low):
        numbers = dict(ours=None, low=None, high=None, verdict="not testable here",
                       reason="fewer than two seeds: no interval")
    else:
        verdict, reason = verdict_from_interval(gap.low, gap.high)
        numbers = dict(ours=gap.gap, low=gap.low, high=gap.high, verdict=verdict, reason=reason)
    return dict(chapter=CHAPTER, claim_id=f"ak_{metric}_{algorithm}",
                claim=f"A-K ends with a higher {CLAIMED_METRICS[metric]} than K-A ({algorithm}, final models, paired "
                      "by seed)", paper_value="A-K > K-A (Figure 5)", figure="fig-06-figure5", **numbers)


def premise_claim(premise) -> dict:
    """The arguments of `claims.record` for the premise of §4.2 (p'' lost the target, p' kept it)."""
    return dict(chapter=CHAPTER, claim_id="premise",
                claim="Before alignment, p'' has lost the rare target (≤ 25 % of p*'s target share) while p' keeps "
                      "it (≥ 75 %)", paper_value="assumed in §4.2", ours=premise.ratio("p''"),
                verdict="holds" if premise.passed else "does not hold",
                reason="" if premise.passed else premise.verdict(), figure="fig-06-premise")


def record_claims(store, gaps: pd.DataFrame, premise=None) -> pd.DataFrame:
    """Record chapter 06's claims with `alignkd.claims.record`: the premise (when measurable) and, per
    algorithm, A-K's gain over K-A in reward and in target precision. Returns the rows recorded, in order."""
    rows = ([premise_claim(premise)] if premise is not None else [])
    rows += [reward_claim(gaps, algorithm, premise, metric) for algorithm in gaps["algorithm"].unique()
             for metric in CLAIMED_METRICS if metric in set(gaps["metric"])]
    for row in rows:
        claims.record(store, **row)
    return pd.DataFrame(rows, columns=claims.COLUMNS)


# --------------------------------------------------------------------------- length, capacity, App. D

LENGTH_COLUMNS = ["raw", "matched", "coverage_a", "coverage_b", "mean_length_a", "mean_length_b"]


def length_table(gaps: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds per algorithm of a `studies.cached_length_gaps` table (a: A-K's final model, b: K-A's)."""
    return gaps.groupby("algorithm", sort=False)[LENGTH_COLUMNS].mean()


def length_reading(raw: float, matched: float) -> str:
    """What a raw and a length-matched reward gain (A-K − K-A) say about length."""
    if raw <= 0:
        return "A-K has no reward gain here, so there is none for length to explain"
    if matched > 0:
        return f"the gain survives at matched length ({matched / raw:.0%} of it)"
    return "the gain vanishes at matched length: it is a length effect"


def length_sentences(gaps: pd.DataFrame) -> list[str]:
    """Per algorithm: A-K − K-A reward raw and at matched length, both mean lengths, and `length_reading`."""
    return [f"{algorithm}: A-K − K-A reward {row.raw:+.3f} raw, {row.matched:+.3f} at matched length (mean length "
            f"{row.mean_length_a:.1f} vs {row.mean_length_b:.1f} tokens); {length_reading(row.raw, row.matched)}."
            for algorithm, row in length_table(gaps).iterrows()]


def target_share_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the target share per (algorithm, model)."""
    return metrics.pivot_table(index=["algorithm", "model"], values="target_share", aggfunc=["mean", "std"])


def decomposition_sentence(algorithm: str, parts: dict[str, float]) -> str:
    """One `studies.gap_decomposition` as a sentence."""
    return (f"{algorithm}: A-K − K-A = {parts['gap']:+.3f} reward; losing the target (pruned vs kept, p'''s size) "
            f"accounts for {parts['pruning']:+.3f}, p'''s size with the target kept for {parts['size']:+.3f}, "
            f"the rest {parts['rest']:+.3f}.")


def selected_steps(trajectories: pd.DataFrame) -> pd.DataFrame:
    """The App. C.4-selected iteration per (algorithm, pipeline) and seed (columns)."""
    return trajectories.groupby(["algorithm", "pipeline", "seed"])["selected_step"].first().unstack("seed")


PAPER_APP_D = pd.DataFrame([
    {"algorithm": "ppo", "final_tau": 0.95, "paper_precision": -2.1573, "paper_recall": -4.2113},
    {"algorithm": "ppo", "final_tau": 0.925, "paper_precision": -1.9880, "paper_recall": -4.2371},
    {"algorithm": "dpo_online", "final_tau": 0.95, "paper_precision": -1.2187, "paper_recall": -4.4132},
    {"algorithm": "dpo_online", "final_tau": 0.975, "paper_precision": -1.5623, "paper_recall": -4.3346},
])
"""App. D's precision and recall of A-K's final SmolLM2 model per final KD temperature."""
PAPER_NAMES = {"ppo": "PPO", "dpo_online": "DPO"}  # what App. D calls our algorithms


def app_d_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Our mean precision and recall of p''_AK per (algorithm, final_tau) beside `PAPER_APP_D`."""
    ours = (metrics[metrics["model"] == "p''_AK"].groupby(["algorithm", "final_tau"])
            [["overall_precision", "overall_recall"]].mean().reset_index())
    return (ours.merge(PAPER_APP_D, on=["algorithm", "final_tau"], how="outer")
            .sort_values(["algorithm", "final_tau"], ignore_index=True))


def final_tau_sentences(metrics: pd.DataFrame, main_tau: float) -> list[str]:
    """Per row of `final_tau_effects`: the change against `main_tau` and whether App. D's trade holds."""
    lines = []
    for row in final_tau_effects(metrics, main_tau).itertuples():
        trade = ("a lower τ buys precision with recall" if row.final_tau < main_tau
                 else "a higher τ buys recall with precision")
        lines.append(f"{row.algorithm}: final KD τ {row.final_tau:g} vs {main_tau:g}: precision "
                     f"{row.d_precision:+.3f} (seed std {row.precision_std:.3f}), recall {row.d_recall:+.3f} (seed std "
                     f"{row.recall_std:.3f}). The paper's trade (App. D: {trade}) "
                     f"{'holds' if row.paper_direction else 'does not hold'} here.")
    return lines


APP_D_WORDS = {"overall_precision": "precision", "overall_recall": "recall"}  # App. D's words for our columns


def app_d_claims(metrics: pd.DataFrame, main_tau: float) -> list[dict]:
    """The arguments of `claims.record` for App. D's trade, per (algorithm, final τ ≠ `main_tau`): a lower final KD
    τ gains precision and loses recall, a higher one the reverse. Both changes are paired by seed against
    `main_tau` with bootstrap intervals; the claim holds where both intervals lie on the claimed side
    (`claims.verdict_from_settings` over the two). `ours` is the change in precision."""
    from ..claims import verdict_from_settings

    finals = metrics[metrics["model"] == FINAL_MODELS["A-K"]]
    rows = []
    for algorithm, part in finals.groupby("algorithm", sort=False):
        by_tau = {tau: at.set_index("seed") for tau, at in part.groupby("final_tau")}
        base = next((at for tau, at in by_tau.items() if np.isclose(tau, main_tau)), None)
        for tau, at in by_tau.items():
            if base is None or np.isclose(tau, main_tau):
                continue
            lower = tau < main_tau
            row = dict(chapter=CHAPTER, claim_id=f"app_d_{algorithm}_{tau:g}", figure="fig-06-figure15",
                       claim=f"A-K's final KD at τ {tau:g} instead of {main_tau:g} "
                             f"{'gains precision and loses recall' if lower else 'gains recall and loses precision'} "
                             f"({algorithm}; ours: the change in precision, paired by seed)",
                       paper_value=(f"{'+' if lower else '−'}precision, {'−' if lower else '+'}recall "
                                    f"(App. D, {PAPER_NAMES.get(algorithm, algorithm)})"))
            seeds = at.index.intersection(base.index)
            if len(seeds) < 2:
                rows.append({**row, "ours": None, "low": None, "high": None, "verdict": "not testable here",
                             "reason": f"{len(seeds)} seed(s) at both temperatures: no interval"})
                continue
            changes = {metric: paired_on_index(at[metric], base[metric])[0] for metric in APP_D_WORDS}
            sides = {"overall_precision": "> 0" if lower else "< 0", "overall_recall": "< 0" if lower else "> 0"}
            verdicts = {metric: verdict_from_interval(changes[metric].low, changes[metric].high, sides[metric])[0]
                        for metric in sides}
            verdict, _ = verdict_from_settings(list(verdicts.values()), "changes")
            reason = "; ".join(f"{APP_D_WORDS[metric]} {format_interval(*changes[metric], 3)} ({verdicts[metric]})"
                               for metric in sides)
            precision = changes["overall_precision"]
            rows.append({**row, "ours": precision.estimate, "low": precision.low, "high": precision.high,
                         "verdict": verdict, "reason": reason})
    return rows


def record_app_d_claims(store, metrics: pd.DataFrame, main_tau: float) -> pd.DataFrame:
    """Record `app_d_claims` with `alignkd.claims.record`; returns the rows recorded."""
    rows = app_d_claims(metrics, main_tau)
    for row in rows:
        claims.record(store, **row)
    return pd.DataFrame(rows, columns=claims.COLUMNS)


def reference_note(refs) -> str:
    """The oracle's fold threshold (beside the paper's) and, on the synthetic language, p*'s topic weights
    and which topic is the target. `refs`: an `experiments.References`."""
    note = f"fold threshold τ_f = {refs.oracle.fold_threshold:.4f} (paper, SmolLM2 p_target: 8.4636)"
    if refs.target_topic is None:
        return note
    weights = [float(w) for w in refs.p_star.weights]
    return (f"{note}\np* topic weights {[round(w, 3) for w in weights]}; target = topic {refs.target_topic} "
            f"({weights[refs.target_topic]:.1%} of p*)")
