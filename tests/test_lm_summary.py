"""The LLM pipelines' numbers (alignkd.lm.summary) on hand-made metrics tables; chapter 06's words on them are
tested in tests/test_chapters_ch06.py."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from alignkd.lm import summary
from alignkd.lm.plots import capacity_figure, coverage_figure
from alignkd.lm.premise import PremiseCheck, PremiseRule

matplotlib.use("Agg")

NAN = float("nan")


def pipeline_rows(algorithm, ak, ka, final_tau=0.95, **extra):
    """A `cached_run_pipelines`-shaped table: per seed s, A-K's final model scores ak[s] and K-A's ka[s] in every
    metric column (`extra` overrides one column with its own per-seed pairs)."""
    rows = []
    for seed, (a, k) in enumerate(zip(ak, ka)):
        columns = {c: (a, k) for c in summary.FINAL_COLUMNS}
        columns.update({c: pair[seed] for c, pair in extra.items()})
        rows.append({"algorithm": algorithm, "seed": seed, "pipeline": "A-K", "model": "p''_AK", "final_tau": final_tau,
                     **{c: v[0] for c, v in columns.items()}})
        rows.append({"algorithm": algorithm, "seed": seed, "pipeline": "K-A", "model": "p''_KA", "final_tau": NAN,
                     **{c: v[1] for c, v in columns.items()}})
        rows.append({"algorithm": algorithm, "seed": seed, "pipeline": "A-K", "model": "p'_AK", "final_tau": NAN,
                     **{c: 99.0 for c in columns}})  # never a final model
    return rows


def premise(p_star, high, low):
    shares = pd.DataFrame({"model": ["p*", "p'", "p''"], "target_share": [p_star, high, low],
                           "low": [p_star, high, low], "high": [p_star, high, low]})
    return PremiseCheck(PremiseRule(), shares)


@pytest.fixture
def metrics():
    rows = pipeline_rows("ppo", ak=[1.0, 2.0, 3.0], ka=[0.5, 1.0, 2.5])
    rows += [row for row in pipeline_rows("ppo", ak=[-9.0] * 3, ka=[0.0] * 3, final_tau=0.925)
             if row["model"] == "p''_AK"]  # A-K's final KD at another τ: not the main one
    rows += pipeline_rows("dpo_online", ak=[0.1, 0.1], ka=[0.3, 0.2])
    return pd.DataFrame(rows)


def test_final_gaps_means_stds_and_paired_gap(metrics):
    gaps = summary.final_gaps(metrics, main_tau=0.95)
    assert len(gaps) == 2 * len(summary.FINAL_COLUMNS)
    ppo = summary.final_gap(gaps, "ppo", "reward")
    assert (ppo.ak_mean, ppo.ka_mean, ppo.n_pairs) == (2.0, pytest.approx(4 / 3), 3)
    assert ppo.ak_std == pytest.approx(1.0) and ppo.ka_std == pytest.approx(np.std([0.5, 1.0, 2.5], ddof=1))
    assert ppo.gap == pytest.approx(2 / 3)  # per-seed differences 0.5, 1.0, 0.5
    # the bootstrap resamples the three differences: its interval lies within their range
    assert 0.5 <= ppo.low <= ppo.gap <= ppo.high <= 1.0
    dpo = summary.final_gap(gaps, "dpo_online", "reward")
    assert dpo.gap == pytest.approx(-0.15) and -0.2 <= dpo.low <= dpo.high <= -0.1


def test_final_gap_of_one_seed_has_no_interval():
    gaps = summary.final_gaps(pd.DataFrame(pipeline_rows("ppo", ak=[1.0], ka=[0.25])), main_tau=0.95)
    row = summary.final_gap(gaps, "ppo", "reward")
    assert row.gap == 0.75 and math.isnan(row.low) and math.isnan(row.high) and math.isnan(row.ak_std)


def test_final_gaps_skip_missing_columns_and_unpaired_seeds():
    frame = pd.DataFrame(pipeline_rows("ppo", ak=[1.0, 2.0, 4.0], ka=[0.0, 1.0, 1.0])).drop(columns="target_share")
    frame = frame[~((frame["model"] == "p''_KA") & (frame["seed"] == 2))]  # K-A lost seed 2
    gaps = summary.final_gaps(frame, main_tau=0.95)
    assert "target_share" not in set(gaps["metric"])
    row = summary.final_gap(gaps, "ppo", "reward")
    assert row.ak_mean == pytest.approx(7 / 3) and row.n_pairs == 2 and row.gap == pytest.approx(1.0)
    with pytest.raises(KeyError, match="target_share"):
        summary.final_gap(gaps, "ppo", "target_share")


def test_capacity_and_coverage_figures_draw_their_points():
    grid = pd.DataFrame({"algorithm": "ppo", "size": ["tiny"] * 4, "pruned": [True, True, False, False],
                         "stage": ["reference", "aligned"] * 2, "reward": [1.0, 2.0, 1.5, 2.5],
                         "target_share": [0.01, 0.02, 0.03, 0.05]})
    fig = capacity_figure([grid])
    # one errorbar series per stage (reference, aligned), its points in reference order (kept, pruned)
    assert [list(c.lines[0].get_ydata()) for c in fig.axes[0].containers] == [[1.5, 1.0], [2.5, 2.0]]
    assert [list(c.lines[0].get_ydata()) for c in fig.axes[1].containers] == [[0.03, 0.01], [0.05, 0.02]]
    sweep = pd.DataFrame({"tau_topic": [0.5, 0.5, 1.0, 1.0], "algorithm": "ppo", "seed": [0, 1, 0, 1],
                          "reference_target_share": [0.01, 0.01, 0.04, 0.04],
                          "reference_target_share_low": [0.008] * 2 + [0.035] * 2,
                          "reference_target_share_high": [0.012] * 2 + [0.045] * 2,
                          "reference_ratio": [0.25, 0.25, 1.0, 1.0], "premise": True,
                          "gap_reward": [0.2, 0.4, 0.0, 0.1], "gap_target_share": [0.01, 0.03, 0.0, 0.0]})
    fig = coverage_figure(sweep, premise_bound=0.02)
    (series,) = fig.axes[0].containers  # one algorithm: one line over p''s share (%)
    assert list(series.lines[0].get_xdata()) == pytest.approx([1.0, 4.0])
    assert list(series.lines[0].get_ydata()) == pytest.approx([0.3, 0.05])
    assert list(fig.axes[1].containers[0].lines[0].get_ydata()) == pytest.approx([2.0, 0.0])  # percentage points
    assert fig.axes[0].lines[-1].get_xdata()[0] == pytest.approx(2.0)  # the premise's bound, in %

