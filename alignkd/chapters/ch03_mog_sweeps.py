"""Chapters 03 and 04 (`notebooks/03_mog_alignment.md`, `04_mog_multi_target.md`): K-A versus A-K over sweeps.

Both chapters run the same sweeps, one target (03) or two (04): `configs` turns their parameters into the
testbed's `Setup` and one `Sweep` per algorithm, `sweep_chapter` computes what both show before the figures
(references, coverage, the cached sweeps, the paired claims), and the rest writes their tables, sentences and
claim rows. The paper claims that Pipeline A-K reaches a higher Final Average Reward and Target Precision than
Pipeline K-A, with lower across-trial variance; trial t of both pipelines starts from the same p' and draws from
the same streams, so every comparison pairs the pipelines by trial (`alignkd.stats`):

- `claims_table`: per (algorithm, targets, panel, β, iterations) and metric, A-K − K-A with a paired
  bootstrap 95 % interval and the Brown–Forsythe test of equal spread, with a verdict for each
  ("holds", "does not hold", or "partly" when the interval contains 0 / the test is not significant);
- `pooled_claims`: per algorithm and metric, the per-trial mean over all settings of the sweep of
  A-K − K-A, with its interval: one number per claim instead of "higher in k of n settings";
- `claims_summary`: per algorithm and metric, the pooled interval and how many settings' verdicts say
  holds / does not hold, for the mean and for the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..cache import ResultStore
from ..claims import verdict_from_interval, verdict_from_settings
from ..mog.algorithms import ALGORITHMS
from ..mog.experiments import cached_high_recall, cached_low_recall, cached_sweep, models_coverage, score_models
from ..mog.groundtruth import SINGLE_TARGET
from ..mog.metrics import METRIC_LABELS, METRICS
from ..mog.mixture import Mixture
from ..mog.pipelines import Setup, Sweep
from ..stats import compare_paired, format_interval, mean_verdict
from .ch02_mog_setup import coverage_sentence

# One module for two chapters: a keyword with a default is a parameter of the chapters that set it (04: targets).
CHAPTERS = ("03_mog_alignment", "04_mog_multi_target")
PARAMETER_FUNCTIONS = ("configs",)  # tests/test_chapters_layer.py

KEYS = ["algorithm", "targets", "panel", "beta", "iterations"]
CLAIM_METRICS = ("reward", "target_precision")
REFERENCE_NAMES = ("p' (A-K reference)", "p'' (K-A reference)")
CLAIM_COLUMNS = ["algorithm", "panel", "beta", "iterations", "diff", "ci_low", "ci_high", "sd_a", "sd_b", "bf_p",
                 "mean_verdict", "spread_verdict"]

FIGURES = {
    "03_mog_alignment": {"ppo": "fig-03-ppo", "dpo_online": "fig-03-dpo-online", "grpo": "fig-03-grpo",
                         "grpo_reward": "fig-03-grpo-reward", "dpo_offline": "fig-03-dpo-offline"},
    "04_mog_multi_target": {"ppo": "fig-04-ppo", "dpo_online": "fig-04-dpo-online", "grpo": "fig-04-grpo",
                            "grpo_reward": "fig-04-grpo-reward"},
}
"""Each chapter's figure label per algorithm (the `name` of its figure cell)."""
PAPER_FIGURES = {
    "03_mog_alignment": {"ppo": "Figure 3", "dpo_online": "Figure 4", "grpo": "Figure 6",
                         "grpo_reward": "Figure 6 (KL in the reward)", "dpo_offline": "Figure 7"},
    "04_mog_multi_target": {"ppo": "Figure 10", "dpo_online": "Figure 11", "grpo": "Figure 12",
                            "grpo_reward": "Figure 12 (KL in the reward)"},
}


def configs(*, n_trials: int, seed: int, algorithms: list[str], betas: list[float], checkpoints: list[int],
            iteration_beta: float, n_low_recall: int, beta_kd: float, sft_iterations: int, kd_iterations: int,
            eval_samples: int, targets: list[int] = SINGLE_TARGET) -> tuple[Setup, dict[str, Sweep]]:
    """The chapter's Setup and one Sweep per algorithm, every parameter validated before any compute."""
    setup = Setup(n_trials=n_trials, seed=seed, n_low_recall=n_low_recall, beta_kd=beta_kd,
                  sft_iterations=sft_iterations, kd_iterations=kd_iterations, eval_samples=eval_samples)
    sweeps = {a: Sweep(algorithm=a, betas=tuple(betas), checkpoints=tuple(checkpoints), iteration_beta=iteration_beta,
                       targets=tuple(targets)) for a in algorithms}
    return setup, sweeps


@dataclass(frozen=True)
class SweepChapter:
    """What chapters 03 and 04 compute before their figures."""

    chapter: str
    setup: Setup
    sweeps: dict[str, Sweep]
    results: pd.DataFrame
    """Every scored model of every sweep (`pipelines.run_sweep`), with the compute `seconds` of its sweep."""
    references: dict[str, Mixture]
    coverage: pd.DataFrame
    reference_scores: pd.DataFrame
    claims: pd.DataFrame
    """`claims_table` of `results`, cached under `mog_claims`."""
    pooled: pd.DataFrame

    @property
    def reference_coverage(self) -> pd.DataFrame:
        """`coverage` of K-A's reference p''."""
        return self.coverage[self.coverage.model == REFERENCE_NAMES[1]]


def sweep_chapter(store: ResultStore, chapter: str, setup: Setup, sweeps: dict[str, Sweep]) -> SweepChapter:
    """Both references with their scores and coverage of the sweeps' targets, every sweep, and the claims."""
    (targets,) = {s.targets for s in sweeps.values()}  # one chapter, one set of targets
    results = pd.concat([cached_sweep(store, setup, s) for s in sweeps.values()], ignore_index=True)
    references = dict(zip(REFERENCE_NAMES, (cached_high_recall(store, setup, progress=False),
                                            cached_low_recall(store, setup, progress=False))))
    claims = store.frame("mog_claims", {"chapter": chapter, "setup": setup, "sweeps": list(sweeps.values()),
                                        "statistics": "paired bootstrap + Brown-Forsythe"}, lambda: claims_table(results))
    return SweepChapter(chapter, setup, sweeps, results, references, models_coverage(setup, references, targets),
                        score_models(setup, references, targets), claims, pooled_claims(results))


def compute_times(run: SweepChapter) -> str:
    """How many models were scored and how long each algorithm's sweep took when it was first computed."""
    return (f"{len(run.results)} scored models; compute time when first made: "
            + ", ".join(f"{a} {run.results[run.results.algorithm == a].seconds.iloc[0]:.0f} s" for a in run.sweeps))


def reference_summary(run: SweepChapter) -> pd.DataFrame:
    """Mean and standard deviation over trials of the four metrics of each reference."""
    return run.reference_scores.groupby("model")[list(METRICS)].agg(["mean", "std"])


def reference_coverage_sentence(run: SweepChapter, comparison: bool = True) -> str:
    """`coverage_sentence` of K-A's reference p''."""
    return coverage_sentence(run.reference_coverage, "K-A's reference p''", comparison)


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
    return pooled.rename(columns={"diff": "pooled_diff", "mean_verdict": "pooled_verdict"}).merge(
        counts, on=["algorithm", "targets", "metric"], how="inner")


def claims_display(table: pd.DataFrame) -> pd.DataFrame:
    """The reward and Target Precision lines of `claims_table`, with the columns the chapters show."""
    return table[table.metric.isin(CLAIM_METRICS)][CLAIM_COLUMNS[:1] + ["metric"] + CLAIM_COLUMNS[1:]]


def precision_display(table: pd.DataFrame) -> pd.DataFrame:
    """The Overall Precision lines of `claims_table` (Figures 8 and 9), with the columns the chapters show."""
    return table[table.metric == "overall_precision"][CLAIM_COLUMNS]


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


def algorithm_report(run: SweepChapter, algorithm: str) -> tuple[pd.DataFrame, str]:
    """What an algorithm's figure is followed by: `pipeline_summary`, then its verdict and the reference's coverage."""
    return pipeline_summary(run.results, algorithm), "\n".join(
        [algorithm_verdict(run.claims, run.pooled, algorithm), reference_coverage_sentence(run, comparison=False)])


def precision_verdict(table: pd.DataFrame) -> str:
    """Figures 8 and 9's claim: how many settings' Overall Precision intervals and spread tests favour A-K."""
    op = table[table.metric == "overall_precision"]
    return (f"A-K − K-A in Overall Precision: the 95 % interval lies above 0 in {(op.mean_verdict == 'holds').sum()} of "
            f"{len(op)} settings and below 0 in {(op.mean_verdict == 'does not hold').sum()}; A-K is significantly "
            f"steadier (Brown–Forsythe, 5 %) in {(op.spread_verdict == 'holds').sum()} and K-A in "
            f"{(op.spread_verdict == 'does not hold').sum()}.")


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


def claim_rows(run: SweepChapter) -> pd.DataFrame:
    """`sweep_claim_rows` of a chapter's run, with its figures and the coverage of K-A's reference."""
    return sweep_claim_rows(run.claims, run.pooled, run.chapter, FIGURES[run.chapter], PAPER_FIGURES[run.chapter],
                            reference_coverage_sentence(run, comparison=False))
