"""Chapter 05 (`notebooks/05_mog_coverage.md`): the MoG gap as a function of the reference's coverage.

`configs` is the one place that turns the chapter's parameters into the testbed's `Setup` and `CoverageStudy`,
so chapter 07 reuses exactly chapter 05's cached references (`profile_call(configs, CHAPTER, profile)`).
`coverage_chapter` computes what the chapter shows before its figures (the cached study, the reference coverage,
the stratified gaps, the trap's β_KD, whether KTO's and SimPO's gaps follow coverage); the rest writes its
tables, sentences, verdicts and claim rows from those numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ..cache import ResultStore
from ..claims import verdict_from_interval
from ..mog.algorithms import ALGORITHMS
from ..mog.coverage_study import (AK_CONTROL, ALIGNED, CoverageStudy, cached_study, lost_counts, stratified_gaps,
                                  trap_beta_kd, with_coverage)
from ..mog.metrics import METRIC_LABELS
from ..mog.pipelines import Setup
from ..mog.successors import Following, coverage_following
from ..stats import format_interval

PARAMETER_FUNCTIONS = ("configs",)  # what takes this chapter's parameters, by name (tests/test_chapters_layer.py)
CHAPTER = "05_mog_coverage"
GAP_METRICS = ("reward", "target_precision")
GAP_COLUMNS = ["algorithm", "beta_kd", "stratum", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "sd_a", "sd_b",
               "bf_p", "mean_verdict", "spread_verdict"]
CLAIM_COLUMNS = ["claim_id", "ours", "low", "high", "verdict", "reason"]
GAP_FIGURE = "fig-05-gap"


def configs(*, n_trials: int, seed: int, beta_kds: list[float], n_low_recalls: list[int], algorithms: list[str],
            beta: float, align_iterations: int, min_lost: int, sft_iterations: int, kd_iterations: int,
            eval_samples: int) -> tuple[Setup, CoverageStudy]:
    """The chapter's Setup (p', p'' with the largest n_low_recall) and CoverageStudy (the β_KD × n_low_recall grid)."""
    setup = Setup(n_trials=n_trials, seed=seed, n_low_recall=max(n_low_recalls), sft_iterations=sft_iterations,
                  kd_iterations=kd_iterations, eval_samples=eval_samples)
    study = CoverageStudy(beta_kds=tuple(beta_kds), n_low_recalls=tuple(n_low_recalls), algorithms=tuple(algorithms),
                          beta=beta, n_iterations=align_iterations, min_lost=min_lost)
    study.check_setup(setup)
    return setup, study


@dataclass(frozen=True)
class CoverageChapter:
    """What chapter 05 computes before its figures."""

    setup: Setup
    study: CoverageStudy
    results: pd.DataFrame
    """One line per (algorithm, pipeline, n_low_recall, β_KD, trial) (`coverage_study.cached_study`)."""
    coverage: pd.DataFrame
    """Every p'' of the grid's per-trial coverage of the target."""
    data: pd.DataFrame
    """`results` joined with their K-A reference's coverage (`coverage_study.with_coverage`)."""
    counts: pd.DataFrame
    """Per (n_low_recall, β_KD): trials, lost-target trials, median share and log-density (`lost_counts`)."""
    gaps: dict[str, pd.DataFrame]
    """Per metric of `GAP_METRICS`: the stratified paired gaps (`coverage_study.stratified_gaps`)."""
    following: list[Following]
    """Does the gap follow coverage, per algorithm of `successors.FOLLOWING_ALGORITHMS`, at the trap's β_KD."""

    @property
    def k_main(self) -> int:
        """The n_low_recall the figures show (the grid's first)."""
        return self.study.n_low_recalls[0]

    @property
    def trap(self) -> float | None:
        """The smallest β_KD whose lost-target group at `k_main` is large enough (None if none is)."""
        return trap_beta_kd(self.counts, self.study.min_lost, self.k_main)

    @property
    def main_data(self) -> pd.DataFrame:
        """`data` at `k_main` (the scatter figures)."""
        return self.data[self.data.n_low_recall == self.k_main]

    def main_gaps(self, metric: str = "reward") -> pd.DataFrame:
        """`gaps[metric]` at `k_main`."""
        gaps = self.gaps[metric]
        return gaps[gaps.n_low_recall == self.k_main]


def coverage_chapter(store: ResultStore, setup: Setup, study: CoverageStudy) -> CoverageChapter:
    """The cached study, its references' coverage, the stratified gaps and the coverage-following answers."""
    results, coverage = cached_study(store, setup, study)
    data = with_coverage(results, coverage)
    counts = lost_counts(coverage)
    gaps = {m: stratified_gaps(data, m, setup.seed) for m in GAP_METRICS}
    k_main = study.n_low_recalls[0]
    following = coverage_following(data, trap_beta_kd(counts, study.min_lost, k_main), k_main, seed=setup.seed)
    return CoverageChapter(setup, study, results, coverage, data, counts, gaps, following)


def compute_times(run: CoverageChapter) -> str:
    """How many models were scored and how long each algorithm took when its table was first made."""
    results = run.results
    return (f"{len(results)} scored models; compute time when first made: "
            + ", ".join(f"{a} {results[results.algorithm == a].seconds.iloc[0]:.0f} s" for a in run.study.algorithms))


def stratum_gaps(run: CoverageChapter) -> pd.DataFrame:
    """A-K − K-A in reward at `k_main`, per stratum (the gap figure)."""
    gaps = run.main_gaps("reward")
    return gaps[gaps.versus == "A-K"]


def control_gaps(run: CoverageChapter) -> pd.DataFrame:
    """A-K, its β_KD 1 control and p'_AK, each minus K-A in reward over all trials at `k_main` (the controls figure)."""
    gaps = run.main_gaps("reward")
    return gaps[gaps.stratum == "all"]


def gap_tables(run: CoverageChapter) -> list:
    """Per metric, the A-K − K-A table at `k_main` (every stratum and β_KD), styled for display."""
    tables = []
    for metric in run.gaps:
        part = run.main_gaps(metric)
        part = part[part.versus == "A-K"]
        tables.append(part[GAP_COLUMNS].style.set_caption(f"A-K − K-A in {metric} (a = A-K, b = K-A)")
                      .format(precision=3))
    return tables


# What the paper says for each algorithm whose gap is asked to follow coverage (chapter 05's claim rows).
FOLLOWING_PAPER_VALUES = {
    "dpo_online": "the DPO trap: the reference offset saturates the gradient as π_ref(y*) → 0 (§3.4, eq. 2)",
    "kto": "persists in KTO whenever a low-recall reference is retained (§3.4)",
    "simpo": "not in the paper: SimPO is the reference-free control (no reference offset to saturate)",
}


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


def following_claim_rows(rows: Sequence[Following], n_low_recall: int, chapter: str = CHAPTER,
                         figure: str = "fig-05-gap") -> pd.DataFrame:
    """Rows for `alignkd.claims.record`: per algorithm, "<alg>-gap-follows-coverage" (lost − kept > 0)."""
    out = []
    for r in rows:
        label = _label(r.algorithm)
        row = dict(chapter=chapter, claim_id=f"{r.algorithm}-gap-follows-coverage",
                   claim=f"{label}: the A-K − K-A reward gap follows the reference's coverage, larger on trials "
                         f"whose p''_{n_low_recall} lost the target than on those that kept it",
                   paper_value=FOLLOWING_PAPER_VALUES.get(r.algorithm, "not in the paper"), figure=figure)
        if r.reason:
            out.append({**row, "ours": None, "low": None, "high": None, "verdict": "not testable here", "reason": r.reason})
            continue
        d = r.difference
        verdict, reason = verdict_from_interval(d.low, d.high, "> 0")
        out.append({**row, "ours": d.estimate, "low": d.low, "high": d.high, "verdict": verdict,
                    "reason": f"{reason}; lost − kept at β_KD {r.beta_kd:g}, unpaired bootstrap over "
                              f"{r.n_lost} lost and {r.n_kept} kept trials"})
    return pd.DataFrame(out)


def _gap_text(gaps: pd.DataFrame, **where) -> str:
    part = gaps
    for column, value in where.items():
        part = part[part[column] == value]
    if part.empty:
        return "no trials"
    row = part.iloc[0]
    return f"{format_interval(row['diff'], row.ci_low, row.ci_high)} (n = {int(row.n)})"


def study_verdict(gaps: pd.DataFrame, counts: pd.DataFrame, study: CoverageStudy, beta_kd: float | None,
                  n_low_recall: int) -> str:
    """The chapter's answer at the trap's β_KD: the gap in lost vs kept trials, its variance, and the controls."""
    metric = gaps.metric.iloc[0]
    row = counts[(counts.n_low_recall == n_low_recall)]
    lost_line = ", ".join(f"{int(r.lost)}/{int(r.trials)} at β_KD {r.beta_kd:g}" for r in row.itertuples())
    lines = [f"Trials whose p''_{n_low_recall} lost the target: {lost_line}."]
    if beta_kd is None:
        lines.append("No β_KD of the grid gives a lost-target group of at least two trials, so the gap cannot be "
                     "stratified here: the paper's mechanism is not testable at this size.")
        return "\n".join(lines)
    g = gaps[(gaps.n_low_recall == n_low_recall) & (gaps.beta_kd == beta_kd)]
    for algorithm in dict.fromkeys(g.algorithm):
        a = g[g.algorithm == algorithm]
        lost = a[(a.stratum == "lost") & (a.versus == "A-K")]
        spread = (f"; A-K's spread in the lost trials {lost.sd_a.iloc[0]:.2f} vs K-A's {lost.sd_b.iloc[0]:.2f} "
                  f"(Brown–Forsythe p = {lost.bf_p.iloc[0]:.2g})") if len(lost) else ""
        lines.append(
            f"{ALGORITHMS[algorithm].label} at β_KD {beta_kd:g}: A-K − K-A in {METRIC_LABELS[metric]} is "
            f"{_gap_text(a, stratum='lost', versus='A-K')} in the trials whose reference lost the target and "
            f"{_gap_text(a, stratum='kept', versus='A-K')} in those that kept it{spread}. Controls (all trials): "
            f"A-K with β_KD 1 in its final KD {_gap_text(a, stratum='all', versus=AK_CONTROL)}, p'_AK itself "
            f"{_gap_text(a, stratum='all', versus=ALIGNED)}, A-K {_gap_text(a, stratum='all', versus='A-K')}.")
    return "\n".join(lines)


def study_claim_rows(gaps: pd.DataFrame, counts: pd.DataFrame, study: CoverageStudy, beta_kd: float | None,
                     n_low_recall: int, chapter: str = CHAPTER, figure: str = "") -> pd.DataFrame:
    """Rows for `alignkd.claims.record`: per algorithm, the gap in lost and kept trials and the lower-variance
    claim in lost trials, at the trap's β_KD (or one "not testable here" row if there is none)."""
    metric = gaps.metric.iloc[0]
    if beta_kd is None:
        return pd.DataFrame([dict(
            chapter=chapter, claim_id=f"trap-lost-gap-{metric}",
            claim=f"A-K reaches a higher {METRIC_LABELS[metric]} than K-A when K-A's reference lost the target",
            paper_value="A-K > K-A (§3.4, §4.1)", ours=None, low=None, high=None, verdict="not testable here",
            reason="no β_KD of the grid gives at least two trials whose p'' lost the target", figure=figure)])
    rows = []
    g = gaps[(gaps.n_low_recall == n_low_recall) & (gaps.beta_kd == beta_kd) & (gaps.versus == "A-K")]
    for algorithm in dict.fromkeys(g.algorithm):
        label = ALGORITHMS[algorithm].label
        for stratum in ("lost", "kept"):
            line = g[(g.algorithm == algorithm) & (g.stratum == stratum)]
            claim = (f"{label}, β_KD {beta_kd:g}: A-K reaches a higher {METRIC_LABELS[metric]} than K-A in trials whose "
                     f"p''_{n_low_recall} {stratum} the target")
            if line.empty or not (line.ci_low.notna().iloc[0]):
                rows.append(dict(chapter=chapter, claim_id=f"{algorithm}-{metric}-{stratum}", claim=claim,
                                 paper_value="A-K > K-A", ours=None, low=None, high=None, verdict="not testable here",
                                 reason=f"fewer than two {stratum}-target trials", figure=figure))
                continue
            r = line.iloc[0]
            verdict, reason = verdict_from_interval(r.ci_low, r.ci_high, "> 0")
            rows.append(dict(chapter=chapter, claim_id=f"{algorithm}-{metric}-{stratum}", claim=claim,
                             paper_value="A-K > K-A", ours=r["diff"], low=r.ci_low, high=r.ci_high, verdict=verdict,
                             reason=f"{reason}; paired bootstrap over {int(r.n)} trials", figure=figure))
            if stratum == "lost":
                spread = r.spread_verdict
                rows.append(dict(
                    chapter=chapter, claim_id=f"{algorithm}-{metric}-lost-variance",
                    claim=f"{label}, β_KD {beta_kd:g}: A-K's {METRIC_LABELS[metric]} varies less across the lost-target "
                          f"trials than K-A's", paper_value="lower variance for A-K", ours=r.sd_a - r.sd_b,
                    low=None, high=None, verdict=spread,
                    reason=(f"sd A-K {r.sd_a:.3g} vs K-A {r.sd_b:.3g}; Brown–Forsythe p = {r.bf_p:.2g}"
                            + ("" if spread != "partly" else ": not significant at 5 %")), figure=figure))
    return pd.DataFrame(rows)


def verdicts(run: CoverageChapter) -> str:
    """The chapter's answer: `study_verdict` in reward for every n_low_recall, then in target precision at `k_main`."""
    reward = [study_verdict(run.gaps["reward"], run.counts, run.study,
                            trap_beta_kd(run.counts, run.study.min_lost, k), k) for k in run.study.n_low_recalls]
    return "\n\n".join(reward + [study_verdict(run.gaps["target_precision"], run.counts, run.study, run.trap,
                                                run.k_main)])


def claim_rows(run: CoverageChapter) -> pd.DataFrame:
    """`study_claim_rows` of every metric of `GAP_METRICS` at the trap's β_KD and `k_main`."""
    return pd.concat([study_claim_rows(run.gaps[m], run.counts, run.study, run.trap, run.k_main, figure=GAP_FIGURE)
                      for m in run.gaps], ignore_index=True)


def following_rows(run: CoverageChapter) -> pd.DataFrame:
    """`following_claim_rows` of the chapter's coverage-following answers."""
    return following_claim_rows(run.following, run.k_main)


__all__ = ["CHAPTER", "PARAMETER_FUNCTIONS", "configs", "CoverageChapter", "coverage_chapter", "compute_times",
           "stratum_gaps", "control_gaps", "gap_tables", "following_sentences", "following_claim_rows",
           "following_rows", "study_verdict", "study_claim_rows", "verdicts", "claim_rows"]
