"""Figures of the LLM chapter: Figure 5 / 15 (pipeline trajectories), Figures 13–14 (selection), and the
two studies the paper has no figure for: recall against capacity and the gap against coverage."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

COLORS = {"K-A": "tab:red", "A-K": "tab:blue"}
PATHS = {"K-A": ["p''", "p''_KA"], "A-K": ["p'", "p'_AK", "p''_AK"]}


def pipeline_points(metrics: pd.DataFrame, algorithm: str, y: str, final_tau: float | None = None) -> pd.DataFrame:
    """Mean and cross-seed std of recall and `y` for each model on the K-A and A-K paths."""
    frame = metrics[metrics["algorithm"] == algorithm]
    if final_tau is not None:
        frame = frame[(frame["model"] != "p''_AK") | np.isclose(frame["final_tau"].astype(float), final_tau)]
    rows = []
    for pipeline, models in PATHS.items():
        for order, model in enumerate(models):
            part = frame[frame["model"] == model]
            rows.append({"pipeline": pipeline, "model": model, "order": order,
                         "overall_recall": part["overall_recall"].mean(), y: part[y].mean(),
                         "std": float(np.nan_to_num(part[[y, "overall_recall"]].std().mean()))})
    return pd.DataFrame(rows)


def _trajectory_panel(ax, points: pd.DataFrame, y: str, scale: float) -> None:
    for pipeline, part in points.groupby("pipeline", sort=False):
        part = part.sort_values("order")
        ax.scatter(part["overall_recall"], part[y], s=15 + scale * part["std"], color=COLORS[pipeline],
                   alpha=0.6, label=pipeline, edgecolor="k")
        for (_, a), (_, b) in zip(part.iloc[:-1].iterrows(), part.iloc[1:].iterrows()):
            ax.annotate("", xy=(b["overall_recall"], b[y]), xytext=(a["overall_recall"], a[y]),
                        arrowprops=dict(arrowstyle="->", color=COLORS[pipeline]))
        for _, row in part.iterrows():
            ax.annotate(row["model"], (row["overall_recall"], row[y]), textcoords="offset points", xytext=(4, 3),
                        fontsize=7)


def trajectory_figure(metrics: pd.DataFrame, algorithms: Sequence[str],
                      panels: Sequence[tuple[str, float | None]] = (("target_precision", None), ("reward", None))):
    """Recall (x) against a target metric (y), K-A red and A-K blue, arrows along each pipeline, marker size ∝ the
    cross-seed standard deviation (instability), as in the paper's Figures 5 and 15: one row per algorithm, one
    column per (y, A-K's final KD τ) in `panels` (τ None: every final τ pooled), two columns to the text's width."""
    fig, axes = plt.subplots(len(algorithms), len(panels), figsize=(3.5 * len(panels), 2.9 * len(algorithms)),
                             squeeze=False, constrained_layout=True)
    for row, algorithm in zip(axes, algorithms):
        for ax, (y, final_tau) in zip(row, panels):
            points = pipeline_points(metrics, algorithm, y, final_tau)
            _trajectory_panel(ax, points, y, 200 / max(points["std"].max(), 1e-9))
            tau = "" if final_tau is None else f", final KD τ {final_tau:g}"
            ax.set_title(f"{algorithm}{tau}", fontsize=9)
            ax.set(xlabel="overall recall (nats/token)", ylabel=y.replace("_", " "))
            ax.margins(0.12)  # room for the model labels at the extremes
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, frameon=False)
    return fig


def selection_figure(trajectories: pd.DataFrame, algorithms: Sequence[str]):
    """App. C.4: PPO/GRPO mean and std of reward (Fig. 13), DPO chosen/rejected/margin/accuracy (Fig. 14), one
    line per seed and pipeline, the selected step dashed; two panels a row, the algorithms one after another."""
    series = []
    for algorithm in algorithms:
        frame = trajectories[trajectories["algorithm"] == algorithm]
        if "margin" in frame and frame["margin"].notna().any():  # DPO logs TRL's implicit-reward series
            columns = [c for c in ("chosen_reward", "rejected_reward", "margin", "accuracy") if c in frame]
        else:
            columns = ["reward_mean", "reward_std"]
        series += [(algorithm, frame, column) for column in columns]
    n_rows = (len(series) + 1) // 2
    fig, axes = plt.subplots(n_rows, 2, figsize=(7, 2.4 * n_rows), squeeze=False, constrained_layout=True)
    for ax, (algorithm, frame, column) in zip(axes.flat, series):
        sns.lineplot(frame, x="iteration", y=column, hue="pipeline", units="seed", estimator=None,
                     palette=COLORS, ax=ax, legend=ax is axes.flat[0])
        for (pipeline, seed), part in frame.groupby(["pipeline", "seed"]):
            ax.axvline(part["selected_step"].iloc[0], color=COLORS[pipeline], ls="--", lw=0.8)
        ax.set_title(f"{algorithm}: {column.replace('_', ' ')}", fontsize=9)
        ax.set(ylabel="")
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(series):]:
        ax.axis("off")
    return fig


def capacity_figure(grids: Sequence[pd.DataFrame]):
    """Mean reward (left) and target share (right) of the K-A references of `studies.cached_capacity_grid` before
    (open) and after (filled) alignment, means over seeds with their standard deviation."""
    grid = pd.concat(grids, ignore_index=True)
    grid["reference"] = grid["size"] + grid["pruned"].map({True: ", pruned", False: ", kept"})
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), constrained_layout=True)
    for ax, column in zip(axes, ("reward", "target_share")):
        for stage, marker in (("reference", "o"), ("aligned", "s")):
            part = grid[grid["stage"] == stage].groupby(["algorithm", "reference"])[column].agg(["mean", "std"])
            part = part.reset_index()
            ax.errorbar(part["reference"], part["mean"], yerr=part["std"].fillna(0), fmt=marker, capsize=3,
                        mfc="none" if stage == "reference" else None, label=stage)
        ax.set(ylabel=column.replace("_", " "))
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    axes[0].legend(frameon=False)
    return fig


def coverage_figure(sweep: pd.DataFrame, premise_bound: float | None = None):
    """A-K − K-A in final reward (left) and final target share (right, percentage points) against the target
    share of p'' measured on its own samples, one line per algorithm over the τ_topic values of
    `studies.cached_coverage_sweep`: 95 % bootstrap intervals over seeds (vertical), the share's 95 % Wilson interval
    (horizontal); `premise_bound` (a share, e.g. the premise's bound on p'') is drawn dotted."""
    from .studies import sweep_intervals  # studies loads the models' stack; the other figures need none of it

    table = sweep_intervals(sweep, ("gap_reward", "gap_target_share")).sort_values("reference_target_share")
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), constrained_layout=True)
    for ax, column, scale in zip(axes, ("gap_reward", "gap_target_share"), (1, 100)):
        for label, part in table.groupby("algorithm", sort=False):
            x = part["reference_target_share"] * 100
            ax.errorbar(x, part[column] * scale, fmt="o-", capsize=3, label=label,
                        xerr=[x - part["reference_target_share_low"] * 100,
                              part["reference_target_share_high"] * 100 - x],
                        yerr=[(part[column] - part[f"{column}_low"]) * scale,
                              (part[f"{column}_high"] - part[column]) * scale])
        ax.axhline(0, color="0.5", lw=0.8)
        if premise_bound is not None:
            ax.axvline(premise_bound * 100, color="0.3", ls=":", lw=1)
        ax.set(xlabel="p'' target share (%)")
    axes[0].set(ylabel="A-K − K-A final reward")
    axes[1].set(ylabel="A-K − K-A final target share (pp)")
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def budget_figure(dose: pd.DataFrame, columns: Sequence[str] = ("target_share", "reward")):
    """Each column of `budget.cached_budget_dose` against the alignment iterations (log scale), one panel per
    (column, algorithm): K-A's aligned p'' (red) and A-K's aligned p' (blue, dashed) after every budget, A-K's final
    KD p''_AK (blue squares) after the smallest and the largest; means over seeds with 95 % bootstrap intervals."""
    from .budget import budget_curves

    algorithms = list(dict.fromkeys(dose["algorithm"]))
    budgets = sorted(int(b) for b in dose["iteration"].unique())
    fig, axes = plt.subplots(len(columns), len(algorithms), figsize=(2.4 * len(algorithms) + 0.6, 2.3 * len(columns)),
                             squeeze=False, constrained_layout=True, sharex=True)
    styles = {"p''_KA": dict(color=COLORS["K-A"], fmt="o-"), "p'_AK": dict(color=COLORS["A-K"], fmt="o--", alpha=0.5),
              "p''_AK": dict(color=COLORS["A-K"], fmt="s", ms=6)}
    for row, column in enumerate(columns):
        curves = budget_curves(dose, column)
        scale = 100 if column == "target_share" else 1
        for ax, algorithm in zip(axes[row], algorithms):
            for model, style in styles.items():
                part = curves[(curves["algorithm"] == algorithm) & (curves["model"] == model)].sort_values("iteration")
                ax.errorbar(part["iteration"], part["mean"] * scale, capsize=3, label=model, **style,
                            yerr=[(part["mean"] - part["low"]).fillna(0) * scale,
                                  (part["high"] - part["mean"]).fillna(0) * scale])
            ax.set_xscale("log", base=2)
            ax.set_xticks(budgets, [str(b) for b in budgets])  # the budgets themselves, not powers of 2
            ax.minorticks_off()
            if row == 0:
                ax.set_title(algorithm, fontsize=9)
            if row == len(columns) - 1:
                ax.set_xlabel("alignment iterations")
        axes[row][0].set_ylabel(column.replace("_", " ") + (" (%)" if scale == 100 else ""))
    axes[0][0].legend(frameon=False, fontsize=7)
    return fig
