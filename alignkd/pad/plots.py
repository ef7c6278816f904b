"""Figures of PAD's own objects (chapter 07's Plackett–Luce illustration)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def plackett_luce_figure(table: pd.DataFrame):
    """Bars of P(ranking) per ranking (the table's index), one hue per column (a Plackett–Luce scale β)."""
    ranking = table.index.name
    long = table.reset_index().melt(id_vars=ranking, var_name="scale", value_name="probability")
    fig, ax = plt.subplots(figsize=(6, 3))
    sns.barplot(data=long, x=ranking, y="probability", hue="scale", ax=ax)
    n = len(table.index[0])  # a ranking names each of the n responses once
    ax.set_title(f"Plackett–Luce distribution over the {n}! rankings of one group's rewards", fontsize=9)
    return fig


__all__ = ["plackett_luce_figure"]
