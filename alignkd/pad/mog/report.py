"""The MoG PAD comparison's final models, paired gaps and figures (chapter 07 writes its tables and words)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ...mog.metrics import METRIC_LABELS
from ...stats import compare_paired

METRIC_COLUMNS = ("reward", "target_precision", "overall_recall", "overall_precision")


def final_models(frame: pd.DataFrame) -> pd.DataFrame:
    """Each pipeline's final model only (PAD at its last iteration), in a fixed display order."""
    last_pad = frame[frame.pipeline.str.startswith("A→PAD")].groupby("pipeline").iterations.transform("max")
    keep = ~frame.pipeline.str.startswith("A→PAD")
    keep |= frame.pipeline.str.startswith("A→PAD") & (frame.iterations == last_pad.reindex(frame.index))
    order = ["p'", "p''", "K-A", "A (p'_AK)", "A-K"] + sorted(p for p in frame.pipeline.unique() if p.startswith("A→PAD"))
    out = frame[keep].copy()
    out["pipeline"] = pd.Categorical(out.pipeline, categories=[o for o in order if o in set(out.pipeline)], ordered=True)
    return out.sort_values(["pipeline", "trial"])


def comparison_boxplots(frame: pd.DataFrame, title: str = ""):
    """Seaborn boxplots of the four metrics, one box per final model (trials as points)."""
    data = final_models(frame)
    fig, axes = plt.subplots(2, 2, figsize=(7, 6.4))
    for ax, metric in zip(axes.flat, METRIC_COLUMNS):
        sns.boxplot(data=data, x="pipeline", y=metric, hue="pipeline", ax=ax, fliersize=2, linewidth=0.8,
                    palette="tab10", legend=False)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def trajectory_plot(frame: pd.DataFrame, x: str = "overall_recall", y: str = "target_precision"):
    """Every PAD variant's trial-mean path in (recall, target precision) over PAD iterations, with
    K-A, A-K and the teacher p'_AK as reference points (the analogue of the paper's Figure 5)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pad = frame[frame.pipeline.str.startswith("A→PAD")]
    path = pad.groupby(["pipeline", "iterations"], as_index=False)[[x, y]].mean()
    sns.lineplot(data=path, x=x, y=y, hue="pipeline", marker="o", sort=False, ax=ax)
    for _, row in path.groupby("pipeline").tail(1).iterrows():
        ax.annotate(f"{int(row.iterations)}", (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    others = frame[frame.pipeline.isin(["p'", "p''", "K-A", "A-K", "A (p'_AK)"])]
    points = others.groupby("pipeline", as_index=False)[[x, y]].mean()
    sns.scatterplot(data=points, x=x, y=y, style="pipeline", color="k", s=70, ax=ax)
    ax.set_xlabel(METRIC_LABELS[x])
    ax.set_ylabel(METRIC_LABELS[y])
    ax.legend(fontsize=7)
    ax.set_title("PAD students over training (trial means; last PAD iteration annotated)", fontsize=9)
    fig.tight_layout()
    return fig


def paired_gaps(frame: pd.DataFrame, baseline: str = "K-A", metrics=("reward", "target_precision"),
                seed: int = 0) -> pd.DataFrame:
    """Every final model minus `baseline`, paired by trial, with bootstrap 95 % intervals (`stats.compare_paired`)."""
    data = final_models(frame).assign(pipeline=lambda d: d.pipeline.astype(str))
    others = [p for p in dict.fromkeys(data.pipeline) if p not in (baseline, "p'", "p''")]
    return pd.concat([compare_paired(data, [], m, a=p, b=baseline, seed=seed).assign(pipeline=p, metric=m)
                      for m in metrics for p in others], ignore_index=True)


__all__ = ["METRIC_COLUMNS", "final_models", "paired_gaps", "comparison_boxplots", "trajectory_plot"]
