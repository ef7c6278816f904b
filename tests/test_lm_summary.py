"""Chapter 06's tables, sentences and claims (alignkd.lm.summary) on hand-made metrics tables."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from alignkd import claims
from alignkd.cache import ResultStore
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


def test_final_sentences_pick_the_verdict(metrics):
    gaps = summary.final_gaps(metrics, main_tau=0.95)
    ppo, dpo = summary.final_sentences(gaps)
    assert ppo.startswith("ppo: final reward A-K 2.000 ± 1.000 vs K-A 1.333 ± ")
    assert "This supports the paper's claim" in ppo and "+0.667 [" in ppo
    assert "This does not support the paper's claim" in dpo
    failed = summary.final_sentences(gaps, premise(0.04, 0.04, 0.03))[0]
    assert "supports (on references that FAIL the premise" in failed
    assert "FAIL" not in summary.final_sentences(gaps, premise(0.04, 0.04, 0.001))[0]


def test_target_share_sentences(metrics):
    metrics.loc[metrics["model"] == "p''_KA", "target_share"] = 0.012
    gaps = summary.final_gaps(metrics, main_tau=0.95)
    assert summary.target_share_sentences(gaps)[0] == \
        "ppo: share of the target topic after alignment, K-A 1.2%, A-K 200.0%."


def test_record_claims_rows(tmp_path, metrics):
    store = ResultStore("test", root=tmp_path)
    gaps = summary.final_gaps(metrics, main_tau=0.95)
    rows = summary.record_claims(store, gaps, premise(0.04, 0.04, 0.004))
    stored = claims.load(store)
    assert list(stored["claim_id"]) == ["premise", "ak_reward_ppo", "ak_target_precision_ppo", "ak_reward_dpo_online",
                                        "ak_target_precision_dpo_online"] == list(rows["claim_id"])
    assert set(stored["figure"][1:]) == {"fig-06-figure5"}
    first = stored.iloc[0]
    assert (first["verdict"], first["ours"], first["figure"]) == ("holds", pytest.approx(0.1), "fig-06-premise")
    ppo = stored.set_index("claim_id").loc["ak_reward_ppo"]
    assert ppo["ours"] == pytest.approx(2 / 3) and ppo["verdict"] == "holds" and ppo["low"] >= 0.5
    dpo = stored.set_index("claim_id").loc["ak_reward_dpo_online"]
    assert dpo["verdict"] == "does not hold" and dpo["high"] <= -0.1


def test_record_claims_when_the_premise_fails_or_is_not_measurable(tmp_path, metrics):
    store = ResultStore("test", root=tmp_path)
    gaps = summary.final_gaps(metrics, main_tau=0.95)
    summary.record_claims(store, gaps, premise(0.04, 0.01, 0.004))  # p' kept only 25 %
    stored = claims.load(store).set_index("claim_id")
    assert stored.loc["premise", "verdict"] == "does not hold"
    assert stored.loc["premise", "reason"].startswith("PREMISE FAILS: p' did not keep the target")
    assert stored.loc["ak_reward_ppo", "verdict"] == "not testable here"
    assert math.isnan(stored.loc["ak_reward_ppo", "ours"])
    claims.clear(store, "06_llm")
    one_seed = summary.final_gaps(pd.DataFrame(pipeline_rows("ppo", ak=[1.0], ka=[0.0])), main_tau=0.95)
    rows = summary.record_claims(store, one_seed, None)  # no premise row on a real LM
    assert list(rows["claim_id"]) == ["ak_reward_ppo", "ak_target_precision_ppo"]
    assert rows.iloc[0]["reason"] == "fewer than two seeds: no interval"


def test_length_table_and_readings():
    gaps = pd.DataFrame({"algorithm": ["ppo", "ppo", "dpo_online", "dpo_online", "grpo"], "seed": [0, 1, 0, 1, 0],
                         "raw": [0.4, 0.2, 0.3, 0.1, -0.1], "matched": [0.2, 0.1, -0.05, -0.05, 0.3],
                         "coverage_a": 0.9, "coverage_b": 0.8, "mean_length_a": [10.0, 12.0, 8.0, 8.0, 5.0],
                         "mean_length_b": 9.0})
    table = summary.length_table(gaps)
    assert list(table.index) == ["ppo", "dpo_online", "grpo"]
    assert table.loc["ppo", "raw"] == pytest.approx(0.3) and table.loc["ppo", "mean_length_a"] == 11.0
    ppo, dpo, grpo = summary.length_sentences(gaps)
    assert ppo == ("ppo: A-K − K-A reward +0.300 raw, +0.150 at matched length (mean length 11.0 vs 9.0 tokens); "
                   "the gain survives at matched length (50% of it).")
    assert dpo.endswith("the gain vanishes at matched length: it is a length effect.")
    assert grpo.endswith("A-K has no reward gain here, so there is none for length to explain.")
    assert summary.length_reading(0.0, 0.5).startswith("A-K has no reward gain")


def test_decomposition_sentence():
    parts = {"gap": 0.5, "pruning": 0.25, "size": 0.125, "rest": 0.125}
    assert summary.decomposition_sentence("ppo", parts) == (
        "ppo: A-K − K-A = +0.500 reward; losing the target (pruned vs kept, p'''s size) accounts for +0.250, "
        "p'''s size with the target kept for +0.125, the rest +0.125.")


def test_app_d_table_beside_the_paper_and_trade_sentences():
    rows = []
    for tau, precision, recall in ((0.95, -2.0, -4.0), (0.925, -1.5, -4.5)):
        for seed in (0, 1):
            rows.append({"algorithm": "ppo", "seed": seed, "model": "p''_AK", "final_tau": tau,
                         "overall_precision": precision + 0.1 * seed, "overall_recall": recall})
    metrics = pd.DataFrame(rows)
    table = summary.app_d_table(metrics).set_index(["algorithm", "final_tau"])
    assert table.loc[("ppo", 0.95), "overall_precision"] == pytest.approx(-1.95)
    assert table.loc[("ppo", 0.925), "paper_precision"] == -1.9880
    assert math.isnan(table.loc[("dpo_online", 0.975), "overall_precision"])  # the paper's row stays, ours is missing
    (sentence,) = summary.final_tau_sentences(metrics, 0.95)
    assert sentence.startswith("ppo: final KD τ 0.925 vs 0.95: precision +0.500 (seed std 0.071), recall -0.500")
    assert sentence.endswith("(App. D: a lower τ buys precision with recall) holds here.")
    metrics.loc[metrics["final_tau"] == 0.925, "overall_recall"] = -3.0
    assert summary.final_tau_sentences(metrics, 0.95)[0].endswith("does not hold here.")


def test_selected_steps_and_target_share_table():
    trajectories = pd.DataFrame({"algorithm": "ppo", "pipeline": ["K-A"] * 3 + ["A-K"] * 3, "seed": [0, 0, 1, 0, 1, 1],
                                 "iteration": [0, 10, 0, 0, 0, 10], "selected_step": [10, 10, 0, 20, 30, 30]})
    steps = summary.selected_steps(trajectories)
    assert steps.loc[("ppo", "K-A"), 0] == 10 and steps.loc[("ppo", "A-K"), 1] == 30
    metrics = pd.DataFrame({"algorithm": "ppo", "model": ["p''_KA", "p''_KA", "p''"], "target_share": [0.1, 0.3, 0.05]})
    table = summary.target_share_table(metrics)
    assert table.loc[("ppo", "p''_KA"), ("mean", "target_share")] == pytest.approx(0.2)


def test_premise_note_and_reference_note():
    assert summary.premise_note(None) == summary.NO_PREMISE
    assert summary.premise_note(premise(0.04, 0.04, 0.004)).startswith("PREMISE PASSES.")

    class Refs:  # the two attributes of `References` the note reads
        class oracle:
            fold_threshold = 3.14159

        class p_star:
            weights = [0.75, 0.25]

        target_topic = 1

    assert summary.reference_note(Refs) == ("fold threshold τ_f = 3.1416 (paper, SmolLM2 p_target: 8.4636)\n"
                                            "p* topic weights [0.75, 0.25]; target = topic 1 (25.0% of p*)")
    Refs.target_topic = None
    assert "\n" not in summary.reference_note(Refs)


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


def test_app_d_claims_pair_seeds_and_need_both_changes_on_the_claimed_side(tmp_path):
    def final(tau, seed, precision, recall):
        return {"algorithm": "ppo", "seed": seed, "model": "p''_AK", "final_tau": tau, "overall_precision": precision,
                "overall_recall": recall}

    metrics = pd.DataFrame(
        [final(0.95, s, p, r) for s, (p, r) in enumerate([(-2.0, -4.0), (-2.2, -4.1), (-2.1, -4.2)])]
        # τ 0.925: precision +0.1, +0.2, +0.1 and recall −0.1, −0.1, −0.2 per seed: App. D's trade, every seed
        + [final(0.925, s, p, r) for s, (p, r) in enumerate([(-1.9, -4.1), (-2.0, -4.2), (-2.0, -4.4)])]
        # τ 0.975: recall +0.1 each seed (claimed), precision +0.1 each seed (against the claim)
        + [final(0.975, s, p, r) for s, (p, r) in enumerate([(-1.9, -3.9), (-2.1, -4.0), (-2.0, -4.1)])])
    store = ResultStore("test", root=tmp_path)
    rows = summary.record_app_d_claims(store, metrics, 0.95).set_index("claim_id")
    lower, higher = rows.loc["app_d_ppo_0.925"], rows.loc["app_d_ppo_0.975"]
    assert lower["ours"] == pytest.approx(4 / 30) and 0.1 - 1e-9 <= lower["low"] <= lower["high"] <= 0.2 + 1e-9
    assert lower["verdict"] == "holds" and "gains precision and loses recall" in lower["claim"]
    assert higher["ours"] == pytest.approx(0.1) and higher["verdict"] == "partly"  # recall as claimed, precision not
    assert "recall +0.100 [+0.100, +0.100] (holds)" in higher["reason"]
    assert list(claims.load(store)["claim_id"]) == ["app_d_ppo_0.925", "app_d_ppo_0.975"]
    one_seed = summary.app_d_claims(metrics[metrics.seed == 0], 0.95)
    assert {row["verdict"] for row in one_seed} == {"not testable here"}


def test_algorithm_names_are_one_glossary():
    from alignkd.lm.algorithms import ALGORITHMS as LM
    from alignkd.mog.algorithms import ALGORITHMS as MOG

    # an LM algorithm is one of MoG's concepts under the same name and label (CONTRIBUTING's glossary)
    assert {name: LM[name].label for name in LM} == {name: MOG[name].label for name in LM}
    assert set(summary.PAPER_APP_D["algorithm"]) == {"ppo", "dpo_online"} <= set(LM)
    assert set(summary.PAPER_NAMES) == {"ppo", "dpo_online"}
