"""Seaborn figures of the MoG chapters (Figures 1–4, 6–12 of the paper)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .groundtruth import MODE_CENTERS, VARIANCE, log_p_star
from .metrics import METRIC_LABELS
from .mixture import Mixture

PIPELINE_COLORS = {"K-A": "tab:red", "A-K": "tab:blue", "A (p'_AK)": "tab:gray"}
_EXTENT = 3.2


def density_panel(ax, log_density, title: str, targets: Sequence[int] = (7,)) -> None:
    """Filled contours of a density on [−3.2, 3.2]², with the target mode(s) circled in green."""
    g = torch.linspace(-_EXTENT, _EXTENT, 201)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    with torch.no_grad():
        z = torch.exp(log_density(pts)).reshape(201, 201).numpy()
    ax.contourf(xx.numpy(), yy.numpy(), z, levels=30, cmap="viridis")
    for t in targets:
        ax.add_patch(plt.Circle(MODE_CENTERS[t].tolist(), 3 * VARIANCE ** 0.5, fill=False, color="lime", lw=2))
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.set_xticks([-1.5, 0, 1.5])
    ax.set_yticks([-1.5, 0, 1.5])


def model_density(model: Mixture, row: int):
    """log q(x) of one row of a batched model, as a function of points [N, 2]."""
    single = model.rows([row])
    return lambda pts: single.log_prob(pts[None])[0]


def figure1(p_high: Mixture, p_low: Mixture, row: int = 0, titles: Sequence[str] = ("", "")) -> plt.Figure:
    """(a) p*, (b) p' and (c) p'' of one trial, as density contours."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    density_panel(axes[0], log_p_star, "(a) ground truth p*")
    density_panel(axes[1], model_density(p_high, row), "(b) high-recall p'\n" + titles[0])
    density_panel(axes[2], model_density(p_low, row), "(c) low-recall p''\n" + titles[1])
    fig.tight_layout()
    return fig


def sweep_boxplots(results: pd.DataFrame, metrics: Sequence[str] = ("reward", "target_precision", "overall_recall"),
                   title: str = "") -> plt.Figure:
    """Panel (a): metrics against β at the final budget; panel (b): against iterations at one β."""
    data = results[results.pipeline.isin(["K-A", "A-K"])]
    fig, axes = plt.subplots(2, len(metrics), figsize=(4.2 * len(metrics), 7), squeeze=False)
    for row, (panel, x) in enumerate((("beta", "beta"), ("iterations", "iterations"))):
        part = data[data.panel == panel]
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            sns.boxplot(data=part, x=x, y=metric, hue="pipeline", hue_order=["K-A", "A-K"], palette=PIPELINE_COLORS,
                        ax=ax, fliersize=2, linewidth=0.8)
            ax.set_ylabel(METRIC_LABELS[metric])
            ax.set_xlabel("β" if x == "beta" else "iterations")
            if panel == "beta":
                ax.set_title(f"(a) {METRIC_LABELS[metric]} vs β (iterations = {int(part.iterations.max())})", fontsize=9)
            else:
                ax.set_title(f"(b) {METRIC_LABELS[metric]} vs iterations (β = {part.beta.iloc[0]:g})", fontsize=9)
            if (row, col) != (0, 0):
                ax.get_legend().remove()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def precision_boxplots(results: pd.DataFrame, panel: str) -> plt.Figure:
    """Figures 8 (panel="beta") and 9 (panel="iterations"): Overall Precision per algorithm."""
    data = results[results.pipeline.isin(["K-A", "A-K"]) & (results.panel == panel)]
    algorithms = list(dict.fromkeys(data.algorithm))
    fig, axes = plt.subplots(1, len(algorithms), figsize=(4.2 * len(algorithms), 3.6), squeeze=False)
    for ax, algorithm in zip(axes[0], algorithms):
        sns.boxplot(data=data[data.algorithm == algorithm], x=panel, y="overall_precision", hue="pipeline",
                    hue_order=["K-A", "A-K"], palette=PIPELINE_COLORS, ax=ax, fliersize=2, linewidth=0.8)
        ax.set_title(algorithm)
        ax.set_xlabel("β" if panel == "beta" else "iterations")
        ax.set_ylabel(METRIC_LABELS["overall_precision"])
        if ax is not axes[0, 0]:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def reward_densities(rewards: dict[str, np.ndarray], threshold: float = 0.9) -> plt.Figure:
    """Figure 2(b): densities of normalised oracle rewards R/10 of samples of each model."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    frame = pd.concat([pd.DataFrame({"normalised reward": r, "model": name}) for name, r in rewards.items()])
    sns.histplot(data=frame, x="normalised reward", hue="model", stat="density", common_norm=False, bins=50,
                 element="step", fill=False, ax=ax)
    ax.axvline(threshold, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_title(f"(b) oracle reward of samples (dashed: top-reward region R/10 > {threshold})", fontsize=9)
    fig.tight_layout()
    return fig
