"""Chapter 02 (`notebooks/02_mog_setup.md`): the MoG testbed, Figure 1's geometry and Figure 2's two traps.

`configs` turns the chapter's parameters into App. A.1's `Setup` and the second grid Figure 1 is scored on;
`references` builds and scores the models the chapter shows. The rest writes the chapter's tables, sentences and
claim rows. `coverage_sentence` is also the coverage sentence of chapters 03, 04 and 07.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch

from ..cache import ResultStore
from ..claims import verdict_from_interval
from ..mog.coverage import LOST_SHARE
from ..mog.experiments import cached_high_recall, cached_low_recall, models_coverage, score_models
from ..mog.geometry import p_star_target_precision
from ..mog.metrics import METRIC_LABELS, normalised_rewards, top_region_counts
from ..mog.mixture import Mixture
from ..mog.pipelines import Setup
from ..stats import paired_bootstrap

PARAMETER_FUNCTIONS = ("configs", "references", "figure2_counts")  # tests/test_chapters_layer.py
CHAPTER = "02_mog_setup"

PAPER_FIGURE1 = {
    "p'": {"overall_precision": -2.2720, "overall_recall": -2.0054, "target_precision": -34.7812},
    "p''_4": {"overall_precision": -2.2703, "overall_recall": -2.9604, "target_precision": -51.4754},
}
"""Figure 1 of the paper: one model per panel (β_KD = 10 for p''_4)."""
FIGURE1_METRICS = ("overall_precision", "overall_recall", "target_precision")


def configs(*, n_trials: int, seed: int, mode_spacing: float, other_spacing: float, beta_kd: float,
            sft_iterations: int, kd_iterations: int, eval_samples: int, figure_trial: int) -> tuple[Setup, Setup]:
    """App. A.1's Setup (modes `mode_spacing` apart) and the same Setup on the grid of spacing `other_spacing`."""
    if figure_trial >= n_trials:
        raise ValueError(f"figure_trial = {figure_trial}: must be < n_trials = {n_trials}")
    setup = Setup(n_trials=n_trials, seed=seed, beta_kd=beta_kd, sft_iterations=sft_iterations,
                  kd_iterations=kd_iterations, eval_samples=eval_samples, mode_spacing=mode_spacing)
    return setup, dataclasses.replace(setup, mode_spacing=other_spacing)


@dataclass(frozen=True)
class References:
    """The chapter's models, per trial, with their metrics and target coverage (one line per trial and model)."""

    models: dict[str, Mixture]
    """p', Figure 1's p''_4, the sweeps' p''_4 (K-A's reference in chapters 03–04) and Figure 2's p''_3."""
    metrics: pd.DataFrame
    coverage: pd.DataFrame
    figure1_metrics: pd.DataFrame
    """Figure 1's two models scored on both grids (column `spacing`; p''_4 named "p''_4")."""
    figure1_name: str
    p_low4_name: str
    """The sweeps' p''_4 (β_KD of the setup)."""
    p_low3_name: str

    @property
    def recall(self) -> pd.DataFrame:
        """Overall Recall, trials × models."""
        return self.metrics.pivot(index="trial", columns="model", values="overall_recall")

    def coverage_of(self, name: str) -> pd.DataFrame:
        return self.coverage[self.coverage.model == name]


def references(store: ResultStore, setup: Setup, other: Setup, *, beta_kd_figure1: float) -> References:
    """p', p''_4 at β_KD = `beta_kd_figure1` (Figure 1) and at the setup's β_KD, p''_3, scored; Figure 1's two
    models once more on `other`'s grid (p' fit to that p*, p''_4 distilled from it)."""
    figure1_name = f"p''_4 (β_KD={beta_kd_figure1:g})"
    p_low4_name, p_low3_name = f"p''_4 (β_KD={setup.beta_kd:g})", f"p''_3 (β_KD={setup.beta_kd:g})"
    p_high = cached_high_recall(store, setup)
    p_low4_figure1 = cached_low_recall(store, setup, n_components=4, beta_kd=beta_kd_figure1)
    models = {"p'": p_high, figure1_name: p_low4_figure1,
              p_low4_name: cached_low_recall(store, setup, n_components=4),
              p_low3_name: cached_low_recall(store, setup, n_components=3)}
    other_models = {"p'": cached_high_recall(store, other), figure1_name: cached_low_recall(store, other, 4,
                                                                                           beta_kd_figure1)}
    figure1_metrics = pd.concat([
        score_models(setup, {"p'": p_high, figure1_name: p_low4_figure1}).assign(spacing=setup.mode_spacing),
        score_models(other, other_models).assign(spacing=other.mode_spacing)])
    figure1_metrics["model"] = figure1_metrics.model.replace({figure1_name: "p''_4"})
    return References(models, score_models(setup, models), models_coverage(setup, models), figure1_metrics,
                      figure1_name, p_low4_name, p_low3_name)


def figure1_titles(refs: References, trial: int) -> list[str]:
    """Panel titles of Figure 1's p' and p''_4: their three metrics in `trial`."""
    shown = refs.metrics[refs.metrics.trial == trial].set_index("model")
    return ["OP {overall_precision:.3f}, OR {overall_recall:.3f}, TP {target_precision:.2f}".format(**shown.loc[n])
            for n in ("p'", refs.figure1_name)]


def figure1_comparison(metrics: pd.DataFrame) -> pd.DataFrame:
    """Our Figure 1 numbers beside the paper's, per spacing.

    `metrics` has columns `spacing`, `model` ("p'" or "p''_4"), `trial` and FIGURE1_METRICS. Returns one
    line per (model, metric) with the paper's value and, per spacing, the trial mean and mean − paper.
    """
    lines = []
    for model, paper in PAPER_FIGURE1.items():
        for metric in FIGURE1_METRICS:
            line = {"model": model, "metric": METRIC_LABELS[metric], "paper": paper[metric]}
            for spacing, part in metrics[metrics.model == model].groupby("spacing"):
                line[f"spacing {spacing:g}: mean"] = part[metric].mean()
                line[f"spacing {spacing:g}: std"] = part[metric].std()
                line[f"spacing {spacing:g}: mean − paper"] = part[metric].mean() - paper[metric]
            lines.append(line)
    return pd.DataFrame(lines)


def _mean_gaps(table: pd.DataFrame) -> dict[float, float]:
    """Mean |ours − paper| over Figure 1's six numbers, per spacing of a `figure1_comparison` table."""
    return {float(c.split()[1].rstrip(":")): table[c].abs().mean() for c in table.columns
            if c.endswith("mean − paper")}


def geometry_verdict(table: pd.DataFrame) -> str:
    """Which spacing the paper's numbers support, and by how much (mean |ours − paper| over the six numbers)."""
    mean_gap = _mean_gaps(table)
    best = min(mean_gap, key=mean_gap.get)
    others = ", ".join(f"{mean_gap[s]:.2f} at spacing {s:g}" for s in sorted(mean_gap) if s != best)
    tp = table[(table.model == "p'") & (table.metric == METRIC_LABELS["target_precision"])].iloc[0]
    paper_tp = PAPER_FIGURE1["p'"]["target_precision"]
    tp_gaps = ", ".join(f"{tp[f'spacing {s:g}: mean − paper']:+.1f} at {s:g}" for s in sorted(mean_gap))
    return (f"The paper's six Figure 1 numbers are closest to spacing {best:g}: the mean |ours − paper| is "
            f"{mean_gap[best]:.2f} there against {others}. p'’s Target Precision alone differs by {tp_gaps} (ours − paper), "
            f"which depends on the grid: p* itself scores {p_star_target_precision(1.0):.2f} at spacing 1.0 and "
            f"{p_star_target_precision(1.5):.2f} at 1.5 (the paper's p': {paper_tp:.2f}).")


def coverage_sentence(coverage: pd.DataFrame, name: str = "p''", comparison: bool = True) -> str:
    """How many trials of this model lost the target; with `comparison`, also what a K-A vs A-K comparison
    with this model as K-A's reference can and cannot show (one reference, all trials)."""
    n, lost = len(coverage), int(coverage.lost.sum())
    share = coverage.target_share
    head = (f"{name} lost the target (share of samples nearest it < {LOST_SHARE:.0%}) in {lost} of {n} trials; "
            f"its share of samples nearest the target has median {share.median():.1%} (range {share.min():.1%}–"
            f"{share.max():.1%}; p* itself: {1 / 8:.1%} per mode).")
    if not comparison:
        return head
    if lost == 0:
        return head + (" So this comparison pits two references that both cover the target: it can show how the "
                       "pipelines differ when the reference has lost recall elsewhere, but it cannot test the "
                       "paper's mechanism, which needs π_ref(target) ≈ 0 (§3.4; chapter 05 tests it).")
    if lost == n:
        return head + " Every trial's reference lost the target: the comparison tests the paper's mechanism directly."
    return head + (f" Only the {lost} lost-target trials test the paper's mechanism (π_ref(target) ≈ 0, §3.4); the "
                   f"other {n - lost} compare two references that both cover it (chapter 05 separates the two).")


def figure2_counts(refs: References, setup: Setup, *,
                   top_reward_threshold: float) -> tuple[dict[str, torch.Tensor], pd.DataFrame]:
    """Figure 2(b)'s normalised rewards [trials, samples] of p', p''_3 and p''_4 (the sweeps' reference), and
    their samples per trial above `top_reward_threshold` (`top_region_counts`)."""
    names = ("p'", refs.p_low3_name, refs.p_low4_name)
    rewards = {name: normalised_rewards(refs.models[name], (7,), setup.seed, setup.trials, setup.eval_samples)
               for name in names}
    return rewards, top_region_counts(rewards, top_reward_threshold, setup.trials)


def figure2_table(top: pd.DataFrame, rewards: Mapping[str, torch.Tensor], recall: pd.DataFrame) -> pd.DataFrame:
    """Figure 2's numbers per model of `top` (rows): top-region counts (mean and std over trials), the mean
    normalised reward of all its samples, and its Overall Recall (mean and std over trials, from `recall`:
    trials × models)."""
    table = pd.DataFrame({"top-region samples mean": top.mean(), "top-region samples std": top.std(),
                          "mean normalised reward": {name: r.mean().item() for name, r in rewards.items()}})
    return table.join(recall[list(top.columns)].agg(["mean", "std"]).T.add_prefix("overall recall "))


def figure2_sentence(recall: pd.DataFrame, top: pd.DataFrame, reference: str, n_samples: int,
                     threshold: float) -> str:
    """Figure 2's two claims against ours: how often p' has the higher Overall Recall than `reference`, and
    their top-region counts (means over trials, median per-trial ratio with `reference`'s count floored at 1).

    `recall`: Overall Recall per trial (rows) and model (columns "p'", `reference`); `top`: `top_region_counts`.
    """
    high, low = top["p'"], top[reference]
    wins = (recall["p'"] > recall[reference]).mean()
    ratio = (high / low.clip(lower=1)).median()
    return (f"The paper reports that p' always has the higher Overall Recall and more than twice as many samples in "
            f"the top-reward region as p''_3. Here p' has the higher recall in {wins:.0%} of {len(recall)} trials, "
            f"and {high.mean():.0f} versus {low.mean():.0f} of {n_samples} samples in the "
            f"region R/10 > {threshold:g} (median per-trial ratio {ratio:.2f}).")


def setup_claim_rows(fig1_table: pd.DataFrame, coverage: pd.DataFrame, recall: pd.DataFrame, top: pd.DataFrame,
                     reference: str, chapter: str = CHAPTER) -> pd.DataFrame:
    """Rows for `alignkd.claims.record` from chapter 02: Figure 1's geometry, the premise (K-A's reference
    lost the target), and Figure 2's two claims about p' and `reference` (p''_3).

    `coverage`: `target_coverage` lines of `reference` (one per trial); `recall`: Overall Recall per trial with
    columns "p'" and `reference`; `top`: top-region sample counts per trial, same columns.
    """
    gaps = _mean_gaps(fig1_table)
    best = min(gaps, key=gaps.get)
    rows = [dict(chapter=chapter, claim_id="figure1-geometry",
                 claim="Figure 1's numbers are those of App. A.1's grid {−1.5, 0, 1.5}² (spacing 1.5)",
                 paper_value="spacing 1.5 (App. A.1)", ours=gaps.get(1.5), low=None, high=None,
                 verdict="not testable here" if 1.5 not in gaps else "holds" if best == 1.5 else "does not hold",
                 reason=f"ours = mean |ours − paper| over Figure 1's six numbers at spacing 1.5; it is "
                        + ", ".join(f"{g:.2f} at spacing {s:g}" for s, g in sorted(gaps.items()))
                        + f": the paper's numbers fit spacing {best:g}", figure="fig-02-figure1")]
    lost, n = int(coverage.lost.sum()), len(coverage)
    rows.append(dict(chapter=chapter, claim_id="premise-lost-target",
                     claim=f"KD leaves a K-A reference ({reference}) that has lost the target, π_ref(y*) ≈ 0 (§3.4)",
                     paper_value="π_ref(y*) ≈ 0 (§3.4)", ours=lost / n, low=None, high=None,
                     verdict="holds" if lost == n else "does not hold" if lost == 0 else "partly",
                     reason=f"ours = share of trials whose {reference} puts < 1 % of its samples nearest the target "
                            f"({lost} of {n}; median share {coverage.target_share.median():.1%})", figure=""))
    for claim_id, claim, paper, a, b in (
            ("figure2-recall", f"p' has a higher Overall Recall than {reference}", "p' > p''_3 (Figure 2a)",
             recall["p'"], recall[reference]),
            ("figure2-top-region", f"p' has more than twice as many samples as {reference} in the top-reward region "
             f"(ours: count(p') − 2·count({reference}) per trial)", "more than twice (Figure 2b)",
             top["p'"], 2 * top[reference])):
        interval = paired_bootstrap(a.to_numpy(), b.to_numpy())
        if interval.low == interval.low:
            verdict, reason = verdict_from_interval(interval.low, interval.high, "> 0")
        else:
            verdict, reason = "not testable here", "fewer than two trials"
        testable = verdict != "not testable here"
        rows.append(dict(chapter=chapter, claim_id=claim_id, claim=claim, paper_value=paper,
                         ours=interval.estimate if testable else None, low=interval.low if testable else None,
                         high=interval.high if testable else None,
                         verdict=verdict, reason=reason + "; paired bootstrap over trials", figure="fig-02-figure2"))
    return pd.DataFrame(rows)
