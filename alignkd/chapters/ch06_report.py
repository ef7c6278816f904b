"""Chapter 06's words: the sentences, verdicts, display tables and claim rows of `notebooks/06_llm.md`.

    print(reference_note(refs))                      # p*'s topic weights, the fold threshold
    print(premise_note(premise))                     # the premise's verdict, shown once
    print(premise_pointer(premise))                  # what later results say of it: one clause
    print("\n".join(final_sentences(gaps, premise)))  # A-K against K-A, per algorithm
    record_claims(store, gaps, premise)              # the chapter's rows of the claims page

The numbers come from the testbed (`alignkd.lm.summary`, `studies`, `premise`, `smollm2`); this module only
puts them into words, tables for display and claim rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .. import claims
from ..cache import ResultStore
from ..claims import verdict_from_interval, verdict_from_settings
from ..lm.budget import READINGS, budget_readings, settled
from ..lm.summary import FINAL_MODELS, final_gap, final_tau_effects
from ..lm.studies import coverage_trend, sweep_intervals
from ..stats import format_interval, paired_on_index
from .ch06_llm import CHAPTER

NO_PREMISE = "Premise: not measurable on this ground truth."


def no_topics_note(what: str, ground_truth: str) -> str:
    """Why a figure or table that needs topic labels is absent on a ground truth without them."""
    return (f"Not shown: {what}. It needs topic labels, which only the synthetic language (markov_mixture) "
            f"has; on {ground_truth} no sample can be assigned to the rare target.")


def premise_note(premise) -> str:
    """The premise's verdict paragraph (`PremiseCheck.verdict`), or why there is none (`premise` None)."""
    return premise.verdict() if premise is not None else NO_PREMISE


def premise_pointer(premise) -> str:
    """The one clause by which a result built on the references points back to the premise's verdict, printed
    once after the references (`premise_note`)."""
    if premise is None:
        return "(premise: not measurable on this ground truth)"
    return f"(premise: see above — {'PASSES' if premise.passed else 'FAILS'})"


def training_sentence(curves: Mapping[str, pd.DataFrame]) -> str:
    """How long each student trained, from its training log (`premise.training_curve`: columns epoch, phase,
    eval_loss): the epochs in all, the epoch the held-out loss stopped improving (the decay phase began after
    it) and how much the decay phase lowered the held-out loss."""
    parts = []
    for name, log in curves.items():
        points = log[log["eval_loss"].notna()]
        stable, decay = points[points["phase"] != "decay"], points[points["phase"] == "decay"]
        text = f"{name} trained {log['epoch'].max():.3g} epochs"
        if len(decay) and len(stable):
            drop = stable["eval_loss"].iloc[-1] - decay["eval_loss"].iloc[-1]
            text += (f" (its held-out loss stopped improving after epoch {stable['epoch'].iloc[-1]:.3g}; the decay "
                     f"phase then lowered it by {drop:.3f} nats/token)")
        else:
            text += " (no decay phase: the held-out loss improved until the last epoch)"
        parts.append(text)
    return "; ".join(parts) + "." if parts else ""


def single_tau_note(final_taus) -> str:
    """Why Figure 15 and App. D's claims are absent: one final KD temperature."""
    return (f"One final KD temperature ({final_taus[0]}); pass final_taus = [0.95, 0.925, 0.975] for Figure 15.")


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
    return _recorded(store, rows)


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
    return _recorded(store, rows)


def reference_note(refs) -> str:
    """The oracle's fold threshold (beside the paper's) and, on the synthetic language, p*'s topic weights
    and which topic is the target. `refs`: an `experiments.References`."""
    note = f"fold threshold τ_f = {refs.oracle.fold_threshold:.4f} (paper, SmolLM2 p_target: 8.4636)"
    if refs.target_topic is None:
        return note
    weights = [float(w) for w in refs.p_star.weights]
    return (f"{note}\np* topic weights {[round(w, 3) for w in weights]}; target = topic {refs.target_topic} "
            f"({weights[refs.target_topic]:.1%} of p*)")


# --------------------------------------------------------------------------- the gap against coverage


def sweep_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """The chapter's table of the sweep: per (tau_topic, algorithm), p'''s measured target share with its
    Wilson interval and the premise verdict, A-K − K-A in final reward and in final target share with their
    95 % intervals over seeds, and the mean final target shares of K-A and A-K."""
    table = sweep_intervals(sweep)
    return table.drop(columns=["reference_ratio", *(f"{name}_{end}" for name in ("ka_target_share", "ak_target_share")
                                                     for end in ("low", "high"))])


def coverage_sentences(sweep: pd.DataFrame) -> list[str]:
    """Per algorithm: how A-K − K-A (reward and target share) changes from the most to the least
    target-writing p'' (`coverage_trend`), with its interval, and whether the reward gap grows."""
    trends = {column: coverage_trend(sweep, column).set_index("algorithm")
              for column in ("gap_reward", "gap_target_share")}
    lines = []
    for label, reward in trends["gap_reward"].iterrows():
        share = trends["gap_target_share"].loc[label]
        if math.isnan(reward["low"]):
            reading = "fewer than two seeds, so no interval says whether it grows"
        else:
            reading = ("grows" if reward["low"] > 0 else "shrinks" if reward["high"] < 0 else
                       "does not change clearly (the interval contains 0)")
            reading = f"the reward gap {reading} as p'' loses the target"
        lines.append(f"{label}: from p'' writing {reward['high_share']:.2%} of the target to {reward['low_share']:.2%}, "
                     f"A-K − K-A changes by {format_interval(reward['estimate'], reward['low'], reward['high'], 3)} in "
                     f"reward and by {format_interval(share['estimate'] * 100, share['low'] * 100, share['high'] * 100, 2)} "
                     f"points of target share (95 % intervals over {int(reward['n_seeds'])} seeds): {reading}.")
    return lines


def coverage_claim(sweep: pd.DataFrame, algorithm: str, premise=None) -> dict:
    """The arguments of `claims.record` for "A-K's reward advantage grows as p'' loses the target" (`algorithm`):
    the reward gap at the least minus at the most target-writing p'', paired by seed."""
    trend = coverage_trend(sweep[sweep["algorithm"] == algorithm]).iloc[0]
    if premise is not None and not premise.kept:
        numbers = dict(ours=None, low=None, high=None, verdict="not testable here",
                       reason="p' fails the premise, so A-K starts without the target too: " + premise.verdict())
    elif math.isnan(trend["low"]):
        numbers = dict(ours=None, low=None, high=None, verdict="not testable here", reason="fewer than two seeds: no interval")
    else:
        verdict, reason = verdict_from_interval(trend["low"], trend["high"])
        numbers = dict(ours=trend["estimate"], low=trend["low"], high=trend["high"], verdict=verdict, reason=reason)
    return dict(chapter=CHAPTER, claim_id=f"coverage_{algorithm}",
                claim=f"A-K's reward advantage over K-A grows as p'' loses the target ({algorithm}; the gap with the "
                      f"least minus with the most target-writing p'' of the τ_topic sweep, paired by seed)",
                paper_value="predicted by §4.2's mechanism (no figure)", figure="fig-06-coverage", **numbers)


def record_coverage_claims(store: ResultStore, sweep: pd.DataFrame, premise=None) -> pd.DataFrame:
    """Record `coverage_claim` for every algorithm of the sweep; returns the rows recorded."""
    rows = [coverage_claim(sweep, algorithm, premise) for algorithm in sweep["algorithm"].unique()]
    return _recorded(store, rows)


# --------------------------------------------------------------------------- the alignment budget

BUDGET_COLUMNS = ["algorithm", "first", "last", "gap_first", "gap_first_low", "gap_first_high", "gap_last",
                  "gap_last_low", "gap_last_high", "change", "change_low", "change_high", "ka_change", "n_seeds",
                  "reading"]


def budget_table(dose: pd.DataFrame, column: str = "target_share") -> pd.DataFrame:
    """The chapter's table of the dose: per algorithm, A-K − K-A in `column` after the smallest and the largest
    budget, the change between them and K-A's own change, with 95 % intervals over seeds, and the reading."""
    return budget_readings(dose, column)[BUDGET_COLUMNS]


def budget_sentences(dose: pd.DataFrame, alignments: Mapping[str, object]) -> list[str]:
    """Per algorithm: the target-share gap after the smallest and the largest budget, its change and the reading;
    then which reference anchors trap and which delay, grouped from the readings (each algorithm's anchor is its
    config's `reference_anchor()`)."""
    readings = budget_readings(dose)
    anchors = {label: alignments[label].reference_anchor() for label in readings["algorithm"]}
    lines = []
    for row in readings.itertuples():
        if row.reading == "not testable":
            lines.append(f"{row.algorithm}: fewer than two seeds, so no interval: not testable here.")
            continue
        lines.append(
            f"{row.algorithm} ({anchors[row.algorithm]}): A-K − K-A in target share "
            f"{format_interval(row.gap_first * 100, row.gap_first_low * 100, row.gap_first_high * 100, 2)} points after "
            f"{row.first} iterations, {format_interval(row.gap_last * 100, row.gap_last_low * 100, row.gap_last_high * 100, 2)} "
            f"after {row.last}; K-A's own share moved by {row.ka_change * 100:+.2f} points: {row.reading}.")
    groups = {reading: [f"{label} ({anchors[label]})" for label in readings.loc[readings["reading"] == reading,
                                                                                "algorithm"]]
              for reading in READINGS}
    said = [f"{reading}: {', '.join(labels)}" for reading, labels in groups.items() if labels]
    lines.append("By reference anchor — " + "; ".join(said) + ".")
    return lines


def settled_sentence(dose: pd.DataFrame, iterations: int) -> str:
    """Whether the main runs' budget (`iterations`, also the 2 × 2's and the coverage sweep's) is one at which the
    answer has settled, by the dose's readings."""
    readings = budget_readings(dose)
    where = (f"The main runs above, the 2 × 2 (where it runs) and the coverage sweep below align for iterations = "
             f"{iterations}; the dose runs {readings['first'].min()} to {readings['last'].max()}.")
    if settled(readings, iterations):
        return where + " Every algorithm reads trapped (or no gap) across it: the answer has settled by then."
    moving = readings[~readings["reading"].isin(("trapped", "no gap"))]
    named = ", ".join(f"{r.algorithm} ({r.reading})" for r in moving.itertuples())
    if not named:
        return where + f" The dose starts after {iterations} iterations, so it cannot say whether that budget settles."
    return (where + f" It has not settled for {named}: their gaps at {iterations} iterations are not what more steps "
            "give; read them with the curves above.")


def budget_claim(dose: pd.DataFrame, algorithm: str, premise=None) -> dict:
    """The arguments of `claims.record` for "more steps do not rescue K-A" (`algorithm`): A-K − K-A in target share
    after the largest budget, paired by seed; the reason adds the gap's change since the smallest budget."""
    row = budget_readings(dose[dose["algorithm"] == algorithm]).iloc[0]
    if _premise_failed(premise):
        numbers = dict(ours=None, low=None, high=None, verdict="not testable here",
                       reason="the references fail the premise: " + premise.verdict())
    elif row["reading"] == "not testable":
        numbers = dict(ours=None, low=None, high=None, verdict="not testable here", reason="fewer than two seeds: no interval")
    else:
        verdict, reason = verdict_from_interval(row["gap_last_low"], row["gap_last_high"])
        change = format_interval(row["change"], row["change_low"], row["change_high"], 4)
        numbers = dict(ours=row["gap_last"], low=row["gap_last_low"], high=row["gap_last_high"], verdict=verdict,
                       reason=f"{reason}; change since {row['first']} iterations {change}: {row['reading']}")
    return dict(chapter=CHAPTER, claim_id=f"budget_{algorithm}",
                claim=f"More alignment steps do not rescue K-A ({algorithm}): A-K − K-A in target share after "
                      f"{row['last']} iterations, paired by seed",
                paper_value="the trap persists (§3.3–3.4)", figure="fig-06-budget", **numbers)


def record_budget_claims(store: ResultStore, dose: pd.DataFrame, premise=None) -> pd.DataFrame:
    """Record `budget_claim` for every algorithm of the dose; returns the rows recorded."""
    rows = [budget_claim(dose, algorithm, premise) for algorithm in dose["algorithm"].unique()]
    return _recorded(store, rows)


# --------------------------------------------------------------------------- SmolLM2

LEARNT_GAP = 0.5
"""Recall above the unigram (nats per token) that counts as a student having learnt more than token frequencies."""


def recall_verdict(table: pd.DataFrame, learnt_gap: float = LEARNT_GAP) -> str:
    """What a `cached_recall_study` table shows, in sentences computed from it."""
    r = table.set_index("model")["overall_recall"]
    split = table.set_index("model")
    high, low = "p'", "p''"
    gap = {name: r[name] - r["unigram"] for name in (high, low)}
    first = split.loc[high, "first_token"] - split.loc["unigram", "first_token"]
    later = split.loc[high, "later_tokens"] - split.loc["unigram", "later_tokens"]
    text = (f"Recall (per-token log-likelihood of p*'s own samples): p* {r['p*']:.2f}, p' {r[high]:.2f}, "
            f"p'' {r[low]:.2f}, the unigram of p''s KD data {r['unigram']:.2f}, a uniform guess {r['uniform']:.2f}. "
            f"p' is {gap[high]:+.2f} nats/token from the unigram ({first:+.2f} on the first token after the prompt, "
            f"{later:+.2f} on the tokens after it), p'' {gap[low]:+.2f}. ")
    if gap[high] >= learnt_gap:
        order = "keeps more of p* than p''" if r[high] > r[low] else "keeps no more of p* than p'' does"
        return text + f"p' has learnt more than token frequencies (at least {learnt_gap} nats/token) and {order}."
    if first <= 0 and later <= 0:
        gained = "p' gained nothing over them"
    else:
        gained = f"what p' gained over them lies mostly in {'the first token' if first > later else 'the later tokens'}"
    return text + (f"That is less than the {learnt_gap} nats/token above the unigram that would show a student "
                   f"learning more than token frequencies: {gained}. References this close to a unigram have no rare "
                   f"behaviour to keep or lose, so the section runs no alignment and makes no claim about K-A and A-K.")


def _recorded(store, rows: list[dict]) -> pd.DataFrame:
    """Record each row with `claims.record`; the rows as a claims table, in order."""
    for row in rows:
        claims.record(store, **row)
    return pd.DataFrame(rows, columns=claims.COLUMNS)
