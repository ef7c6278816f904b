"""Seaborn figures of the MoG chapters (Figures 1–4, 6–12 of the paper)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .groundtruth import MODE_SPACING, VARIANCE, log_p_star, mode_centers
from .metrics import METRIC_LABELS
from .mixture import Mixture

PIPELINE_COLORS = {"K-A": "tab:red", "A-K": "tab:blue", "A (p'_AK)": "tab:gray"}
_EXTENT = 3.2


def density_panel(ax, log_density, title: str, targets: Sequence[int] = (7,), spacing: float = MODE_SPACING) -> None:
    """Filled contours of a density on [−3.2, 3.2]², with the target mode(s) circled in green."""
    g = torch.linspace(-_EXTENT, _EXTENT, 201)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    with torch.no_grad():
        z = torch.exp(log_density(pts)).reshape(201, 201).numpy()
    ax.contourf(xx.numpy(), yy.numpy(), z, levels=30, cmap="viridis")
    for t in targets:
        ax.add_patch(plt.Circle(mode_centers(spacing)[t].tolist(), 3 * VARIANCE ** 0.5, fill=False, color="lime", lw=2))
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.set_xticks([-spacing, 0, spacing])
    ax.set_yticks([-spacing, 0, spacing])
    ax.tick_params(labelsize=7)


def model_density(model: Mixture, row: int):
    """log q(x) of one row of a batched model, as a function of points [N, 2]."""
    single = model.rows([row])
    return lambda pts: single.log_prob(pts[None])[0]


def figure1(p_high: Mixture, p_low: Mixture, row: int = 0, titles: Sequence[str] = ("", ""),
            spacing: float = MODE_SPACING) -> plt.Figure:
    """(a) p*, (b) p' and (c) p'' of one trial, as density contours."""
    fig, axes = plt.subplots(1, 3, figsize=(7, 2.9))
    density_panel(axes[0], lambda x: log_p_star(x, spacing), "(a) ground truth p*", spacing=spacing)
    density_panel(axes[1], model_density(p_high, row), "(b) high-recall p'\n" + titles[0], spacing=spacing)
    density_panel(axes[2], model_density(p_low, row), "(c) low-recall p''\n" + titles[1], spacing=spacing)
    fig.tight_layout()
    return fig


def sweep_boxplots(results: pd.DataFrame, metrics: Sequence[str] = ("reward", "target_precision", "overall_recall"),
                   title: str = "") -> plt.Figure:
    """Panel (a): metrics against β at the final budget; panel (b): against iterations at one β."""
    data = results[results.pipeline.isin(["K-A", "A-K"])]
    fig, axes = plt.subplots(2, len(metrics), figsize=(7, 5.2), squeeze=False)
    for row, (panel, x) in enumerate((("beta", "beta"), ("iterations", "iterations"))):
        part = data[data.panel == panel]
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            sns.boxplot(data=part, x=x, y=metric, hue="pipeline", hue_order=["K-A", "A-K"], palette=PIPELINE_COLORS,
                        ax=ax, fliersize=2, linewidth=0.8)
            ax.set_ylabel(METRIC_LABELS[metric], fontsize=8)
            ax.set_xlabel("β" if x == "beta" else "iterations", fontsize=8)
            ax.tick_params(labelsize=7)
            if panel == "beta":
                ax.set_title(f"(a) vs β, {int(part.iterations.max())} iterations", fontsize=8)
            else:
                ax.set_title(f"(b) vs iterations, β = {part.beta.iloc[0]:g}", fontsize=8)
            if (row, col) != (0, 0):
                ax.get_legend().remove()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def precision_boxplots(results: pd.DataFrame, panel: str) -> plt.Figure:
    """Figures 8 (panel="beta") and 9 (panel="iterations"): Overall Precision per algorithm."""
    data = results[results.pipeline.isin(["K-A", "A-K"]) & (results.panel == panel)]
    algorithms = list(dict.fromkeys(data.algorithm))
    n_cols = min(len(algorithms), 2)
    n_rows = -(-len(algorithms) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(7, 2.8 * n_rows), squeeze=False)
    for ax in axes.flat[len(algorithms):]:
        ax.set_visible(False)
    for ax, algorithm in zip(axes.flat, algorithms):
        sns.boxplot(data=data[data.algorithm == algorithm], x=panel, y="overall_precision", hue="pipeline",
                    hue_order=["K-A", "A-K"], palette=PIPELINE_COLORS, ax=ax, fliersize=2, linewidth=0.8)
        ax.set_title(algorithm)
        ax.set_xlabel("β" if panel == "beta" else "iterations")
        ax.set_ylabel(METRIC_LABELS["overall_precision"], fontsize=8)
        ax.tick_params(labelsize=7)
        if ax is not axes[0, 0]:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def reward_densities(rewards: dict[str, np.ndarray], threshold: float = 0.9, ax=None) -> plt.Figure:
    """Figure 2(b): densities of normalised oracle rewards R/10 of samples of each model."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    fig = ax.figure
    frame = pd.concat([pd.DataFrame({"normalised reward": r, "model": name}) for name, r in rewards.items()])
    sns.histplot(data=frame, x="normalised reward", hue="model", stat="density", common_norm=False, bins=50,
                 element="step", fill=False, ax=ax)
    ax.axvline(threshold, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_title(f"(b) R/10 of samples (dashed: top region > {threshold:g})", fontsize=9)
    fig.tight_layout()
    return fig


def _panel_grid(n: int, height: float = 2.4):
    n_cols = min(n, 2)
    n_rows = -(-n // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(7, height * n_rows + 0.4), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def coverage_scatter(data: pd.DataFrame, metric: str = "reward", floor: float = 1e-4,
                     lost_share: float = 0.01) -> plt.Figure:
    """Chapter 05: each trial's final `metric` against its K-A reference's target share (log x), per algorithm.

    K-A (red) and A-K of the same seed and β_KD (blue) share an x; the dashed line is the lost-target
    threshold. `data` is `coverage_study.with_coverage(...)`; shares of 0 are drawn at `floor`.
    """
    data = data[data.pipeline.isin(["K-A", "A-K"])]
    data = data.assign(target_share_clipped=data.target_share.clip(lower=floor))
    algorithms = list(dict.fromkeys(data.algorithm))
    fig, axes = _panel_grid(len(algorithms))
    for ax, algorithm in zip(axes, algorithms):
        part = data[data.algorithm == algorithm]
        sns.scatterplot(data=part, x="target_share_clipped", y=metric, hue="pipeline", hue_order=["K-A", "A-K"],
                        palette=PIPELINE_COLORS, s=8, alpha=0.5, linewidth=0, ax=ax, legend=ax is axes[0])
        ax.set_xscale("log")
        ax.axvline(lost_share, color="k", ls="--", lw=0.8)
        ax.set_title(algorithm, fontsize=9)
        ax.set_xlabel("K-A reference: share of samples nearest the target", fontsize=8)
        ax.set_ylabel(METRIC_LABELS[metric], fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def gap_plot(gaps: pd.DataFrame, hue: str = "stratum", hue_order: Sequence[str] | None = None) -> plt.Figure:
    """Chapter 05: A − K-A with its 95 % interval against β_KD, one panel per algorithm, one colour per `hue`."""
    algorithms = list(dict.fromkeys(gaps.algorithm))
    hue_order = list(hue_order or dict.fromkeys(gaps[hue]))
    beta_kds = sorted(gaps.beta_kd.unique())
    fig, axes = _panel_grid(len(algorithms))
    width = 0.8 / max(len(hue_order), 1)
    for ax, algorithm in zip(axes, algorithms):
        part = gaps[gaps.algorithm == algorithm]
        for j, level in enumerate(hue_order):
            line = part[part[hue] == level].set_index("beta_kd").reindex(beta_kds)
            x = np.arange(len(beta_kds)) - 0.4 + width * (j + 0.5)
            ax.errorbar(x, line["diff"], yerr=[line["diff"] - line.ci_low, line.ci_high - line["diff"]], fmt="o",
                        ms=3, lw=1, capsize=2, label=level)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(len(beta_kds)), [f"{b:g}" for b in beta_kds])
        ax.set_title(algorithm, fontsize=9)
        ax.set_xlabel("β_KD of K-A's reference (and A-K's final KD)", fontsize=8)
        ax.set_ylabel(f"Δ {METRIC_LABELS[gaps.metric.iloc[0]]}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
