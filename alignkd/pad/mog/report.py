"""Tables, figures and the verdict of the MoG PAD comparison (chapter 07)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ...mog.metrics import METRIC_LABELS
from ...stats import compare_paired, format_interval

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


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over trials of the four metrics for every final model."""
    return final_models(frame).groupby("pipeline", observed=True)[list(METRIC_COLUMNS)].agg(["mean", "std"])


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


def escape_verdict(frame: pd.DataFrame) -> str:
    """The chapter's answer in numbers: did each PAD student reach the target, and what did it cost in recall?"""
    table = final_models(frame).groupby("pipeline", observed=True)[list(METRIC_COLUMNS)].mean()
    spread = final_models(frame).groupby("pipeline", observed=True)["reward"].std()
    lines = []
    ka, ak, teacher = table.loc["K-A"], table.loc["A-K"], table.loc["A (p'_AK)"]
    lines.append(f"K-A reaches a mean reward of {ka.reward:.2f} (target precision {ka.target_precision:.1f}, recall "
                 f"{ka.overall_recall:.2f}); A-K {ak.reward:.2f} ({ak.target_precision:.1f}, {ak.overall_recall:.2f}); "
                 f"the shared teacher p'_AK {teacher.reward:.2f}.")
    for name in (p for p in table.index if p.startswith("A→PAD")):
        row = table.loc[name]
        start = "p''" if "p_low" in name else "a fresh compact model"
        escaped = row.reward > ka.reward
        lines.append(
            f"{name}, starting from {start}: mean reward {row.reward:.2f} ± {spread[name]:.2f} "
            f"({'above' if escaped else 'not above'} K-A's {ka.reward:.2f}; {row.reward - ak.reward:+.2f} against A-K), "
            f"target precision {row.target_precision:.1f} ({row.target_precision - ka.target_precision:+.1f} against K-A), "
            f"recall {row.overall_recall:.2f} ({row.overall_recall - ka.overall_recall:+.2f} against K-A, "
            f"{row.overall_recall - ak.overall_recall:+.2f} against A-K).")
    return "\n".join(lines)


def trajectory_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Trial means of the four metrics of every PAD student at every scored PAD iteration."""
    pad = frame[frame.pipeline.str.startswith("A→PAD")]
    return pad.groupby(["pipeline", "iterations"])[list(METRIC_COLUMNS)].mean()


def paired_gaps(frame: pd.DataFrame, baseline: str = "K-A", metrics=("reward", "target_precision"),
                seed: int = 0) -> pd.DataFrame:
    """Every final model minus `baseline`, paired by trial, with bootstrap 95 % intervals (`stats.compare_paired`)."""
    data = final_models(frame).assign(pipeline=lambda d: d.pipeline.astype(str))
    others = [p for p in dict.fromkeys(data.pipeline) if p not in (baseline, "p'", "p''")]
    return pd.concat([compare_paired(data, [], m, a=p, b=baseline, seed=seed).assign(pipeline=p, metric=m)
                      for m in metrics for p in others], ignore_index=True)


def answer(frame: pd.DataFrame, lost: pd.DataFrame | None, trap: str) -> str:
    """Does a reference-free PAD student escape the trap? Each PAD variant against K-A and A-K, paired by trial,
    on every trial and (if given) on the trials whose reference lost the target (`trap` says which)."""
    lines = []
    for name, part in (("all trials", frame), (f"the trials whose p'' lost the target ({trap})", lost)):
        if part is None:
            lines.append(f"On {name}: not run (no lost-target trials at this size).")
            continue
        vs_ka, vs_ak = paired_gaps(part, "K-A", ("reward",)), paired_gaps(part, "A-K", ("reward",))
        for pad in [p for p in vs_ka.pipeline if p.startswith("A→PAD")]:
            a = vs_ka[vs_ka.pipeline == pad].iloc[0]
            b = vs_ak[vs_ak.pipeline == pad].iloc[0]
            escaped = {"holds": "escapes it", "does not hold": "does worse than K-A",
                       "partly": "is not distinguishable from K-A"}.get(a.mean_verdict, "cannot be judged")
            lines.append(f"On {name} (n = {int(a.n)}): {pad} minus K-A in reward "
                         f"{format_interval(a['diff'], a.ci_low, a.ci_high)}, minus A-K "
                         f"{format_interval(b['diff'], b.ci_low, b.ci_high)}: the reference-free student {escaped}.")
    return "\n".join(lines)


ESCAPE_PAPER_VALUE = "not in either paper: this book's question (PAD is reference-free, §2 of the PAD paper)"


def answer_claim_rows(frame: pd.DataFrame, lost: pd.DataFrame | None, trap: str, chapter: str = "07_pad",
                      figure: str = "fig-07-mog-lost") -> pd.DataFrame:
    """Rows for `alignkd.claims.record`: per PAD variant, "the reference-free student ends with a higher reward
    than K-A" on the trials whose K-A reference lost the target (the trap the question is about), paired by trial.
    Without lost-target trials each variant's row says the question is not testable at this size."""
    from ...claims import verdict_from_interval

    rows = []
    variants = [p for p in dict.fromkeys(final_models(frame).pipeline.astype(str)) if p.startswith("A→PAD")]
    gaps = paired_gaps(lost, "K-A", ("reward",)) if lost is not None else None
    for number, pad in enumerate(variants):
        claim = (f"{pad}: a reference-free student escapes the low-recall trap, ending with a higher reward than K-A "
                 f"on the trials whose K-A reference lost the target")
        row = dict(chapter=chapter, claim_id=f"mog-escape-{number}", claim=claim, paper_value=ESCAPE_PAPER_VALUE,
                   figure=figure)
        if gaps is None:
            rows.append({**row, "ours": None, "low": None, "high": None, "verdict": "not testable here",
                         "reason": "no β_KD of chapter 05's grid leaves enough trials without the target at this "
                                   "profile's size"})
            continue
        gap = gaps[gaps.pipeline == pad].iloc[0]
        verdict, reason = verdict_from_interval(gap.ci_low, gap.ci_high, "> 0")
        rows.append({**row, "ours": gap["diff"], "low": gap.ci_low, "high": gap.ci_high, "verdict": verdict,
                     "reason": f"{reason}; {int(gap.n)} trials whose p'' lost the target at {trap}"})
    return pd.DataFrame(rows)
