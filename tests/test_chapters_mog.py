"""The words of the MoG chapters (02: `ch02_mog_setup`, 03 and 04: `ch03_mog_sweeps`), by hand."""

import pandas as pd
import pytest
import torch

from alignkd.cache import ResultStore
from alignkd.chapters.ch02_mog_setup import (PAPER_FIGURE1, configs as setup_configs, coverage_sentence,
                                             figure1_comparison, figure2_sentence, figure2_table, geometry_verdict,
                                             setup_claim_rows)
from alignkd.chapters.ch03_mog_sweeps import (FIGURES, PAPER_FIGURES, algorithm_report, algorithm_verdict,
                                              claims_display, claims_summary, claims_table, compute_times,
                                              configs as sweep_configs, overall_verdict, pooled_claims,
                                              precision_display, precision_verdict, sweep_chapter, sweep_claim_rows)
from alignkd.claims import COLUMNS, VERDICTS
from alignkd.mog.pipelines import Setup, Sweep

REFERENCE = "p''_3 (β_KD=1.25)"


def _coverage(shares):
    return pd.DataFrame({"target_share": shares, "lost": [s < 0.01 for s in shares]})


def test_coverage_sentence_says_what_the_comparison_can_test():
    assert coverage_sentence(_coverage([0.0, 0.2]), comparison=False) == (
        "p'' lost the target (share of samples nearest it < 1%) in 1 of 2 trials; its share of samples nearest the "
        "target has median 10.0% (range 0.0%–20.0%; p* itself: 12.5% per mode).")
    assert "cannot test the paper's mechanism" in coverage_sentence(_coverage([0.1, 0.2]))
    assert "tests the paper's mechanism directly" in coverage_sentence(_coverage([0.0, 0.001]))
    assert "Only the 1 lost-target trials" in coverage_sentence(_coverage([0.0, 0.2]), "q")


def test_chapter_02_configs_check_the_figure_trial_and_move_only_the_grid():
    setup, other = setup_configs(n_trials=3, seed=1, mode_spacing=1.5, other_spacing=1.0, beta_kd=1.25,
                                 sft_iterations=10, kd_iterations=10, eval_samples=100, figure_trial=2)
    assert setup == Setup(n_trials=3, seed=1, sft_iterations=10, kd_iterations=10, eval_samples=100)
    assert other == Setup(n_trials=3, seed=1, sft_iterations=10, kd_iterations=10, eval_samples=100, mode_spacing=1.0)
    with pytest.raises(ValueError, match="figure_trial = 3: must be < n_trials = 3"):
        setup_configs(n_trials=3, seed=1, mode_spacing=1.5, other_spacing=1.0, beta_kd=1.25, sft_iterations=10,
                      kd_iterations=10, eval_samples=100, figure_trial=3)


def test_figure2_sentence_numbers():
    recall = pd.DataFrame({"p'": [-3.0, -3.1, -2.9, -3.5], REFERENCE: [-3.2, -3.0, -3.3, -3.6]},
                          index=pd.Index([0, 1, 2, 3], name="trial"))
    top = pd.DataFrame({"p'": [40.0, 30.0, 25.0, 10.0], REFERENCE: [10.0, 0.0, 20.0, 10.0]}, index=recall.index)
    sentence = figure2_sentence(recall, top, REFERENCE, n_samples=1000, threshold=0.9)
    # wins in trials 0, 2, 3; ratios 4, 30 (0 floored at 1), 1.25, 1 -> median (1.25 + 4) / 2
    assert "p' has the higher recall in 75% of 4 trials" in sentence
    assert "and 26 versus 10 of 1000 samples in the region R/10 > 0.9 (median per-trial ratio 2.62)." in sentence
    assert sentence.startswith("The paper reports that p' always has the higher Overall Recall")


def test_figure2_sentence_needs_both_models():
    recall = pd.DataFrame({"p'": [-3.0]})
    with pytest.raises(KeyError):
        figure2_sentence(recall, recall, REFERENCE, n_samples=10, threshold=0.9)


def test_figure2_table_by_hand():
    top = pd.DataFrame({"p'": [4.0, 2.0], REFERENCE: [1.0, 1.0]}, index=pd.Index([0, 1], name="trial"))
    rewards = {"p'": torch.tensor([[0.5, 1.0], [0.25, 0.25]]), REFERENCE: torch.tensor([[0.0, 0.5], [0.5, 1.0]])}
    recall = pd.DataFrame({"p'": [-3.0, -2.0], REFERENCE: [-4.0, -4.0], "p''_4": [-9.0, -9.0]}, index=top.index)
    table = figure2_table(top, rewards, recall)
    assert list(table.index) == ["p'", REFERENCE]  # the models of `top`, not every model of `recall`
    assert table.loc["p'"].to_dict() == pytest.approx({
        "top-region samples mean": 3.0, "top-region samples std": 2 ** 0.5, "mean normalised reward": 0.5,
        "overall recall mean": -2.5, "overall recall std": 0.5 ** 0.5})
    assert table.loc[REFERENCE, "top-region samples std"] == 0 and table.loc[REFERENCE, "overall recall mean"] == -4


def test_geometry_verdict_picks_the_spacing_closer_to_the_paper():
    lines = []
    for spacing, offset in ((1.0, 0.1), (1.5, 3.0)):  # ours = paper + offset at each spacing
        for model, paper in PAPER_FIGURE1.items():
            for trial in (0, 1):
                lines.append({"spacing": spacing, "model": model, "trial": trial,
                              **{m: v + offset for m, v in paper.items()}})
    table = figure1_comparison(pd.DataFrame(lines))
    assert table["spacing 1: mean − paper"].tolist() == pytest.approx([0.1] * 6)
    assert "closest to spacing 1: the mean |ours − paper| is 0.10 there against 3.00 at spacing 1.5" in \
        geometry_verdict(table)


def _paired_results():
    """3 trials × 2 β of PPO: A-K − K-A is +4 in reward and −4 in Target Precision, 0 in recall."""
    rows = []
    for pipeline, rewards in (("A-K", [8.0, 9.0, 10.0]), ("K-A", [2.0, 6.0, 7.0])):
        for t, r in enumerate(rewards):
            for beta in (1.0, 2.0):
                rows.append({"algorithm": "ppo", "targets": "7", "panel": "beta", "beta": beta, "iterations": 10,
                             "trial": t, "pipeline": pipeline, "reward": r + beta, "target_precision": -r,
                             "overall_recall": -2.0 - t, "overall_precision": -3.0})
    return pd.DataFrame(rows)


def test_claims_table_is_ak_minus_ka_paired_by_trial():
    results = _paired_results()
    table = claims_table(results).set_index(["metric", "beta"])
    reward = table.loc[("reward", 1.0)]
    assert reward["diff"] == pytest.approx(9.0 - 5.0) and reward.n == 3
    assert reward.sd_a == pytest.approx(1.0) and reward.sd_b == pytest.approx(7.0 ** 0.5)  # var [2, 6, 7] = 7
    assert reward.ci_low <= 4.0 <= reward.ci_high and reward.mean_verdict == "holds"  # all three pairs > 0
    assert table.loc[("target_precision", 1.0), "diff"] == pytest.approx(-4.0)
    assert table.loc[("target_precision", 1.0), "mean_verdict"] == "does not hold"
    assert table.loc[("overall_recall", 1.0), "diff"] == pytest.approx(0.0)
    pooled = pooled_claims(results).set_index("metric")
    assert pooled.loc["reward", "diff"] == pytest.approx(4.0)  # the same difference at both β
    summary = claims_summary(table.reset_index(), pooled.reset_index()).set_index("metric")
    assert summary.loc["reward", "settings"] == 2 and summary.loc["reward", "mean_holds"] == 2
    assert "Final Average Reward: A-K − K-A averaged over the 2 settings = +4.00" in algorithm_verdict(
        table.reset_index(), pooled.reset_index(), "ppo")


def _figure1_table(offsets={1.0: 0.1, 1.5: 3.0}):
    lines = [{"spacing": spacing, "model": model, "trial": trial, **{m: v + offset for m, v in paper.items()}}
             for spacing, offset in offsets.items() for model, paper in PAPER_FIGURE1.items() for trial in (0, 1)]
    return figure1_comparison(pd.DataFrame(lines))


def test_setup_claim_rows_by_hand():
    recall = pd.DataFrame({"p'": [-2.0, -2.1, -2.2], REFERENCE: [-3.0, -3.0, -3.1]})
    top = pd.DataFrame({"p'": [30.0, 40.0, 50.0], REFERENCE: [10.0, 10.0, 30.0]})
    rows = setup_claim_rows(_figure1_table(), _coverage([0.0, 0.001, 0.2]), recall, top, REFERENCE).set_index(
        "claim_id")
    assert list(rows.columns) == [c for c in COLUMNS if c != "claim_id"] and set(rows.verdict) <= set(VERDICTS)
    geometry = rows.loc["figure1-geometry"]
    assert geometry.verdict == "does not hold" and geometry.ours == pytest.approx(3.0)
    assert geometry.reason.endswith("0.10 at spacing 1, 3.00 at spacing 1.5: the paper's numbers fit spacing 1")
    premise = rows.loc["premise-lost-target"]
    assert premise.verdict == "partly" and premise.ours == pytest.approx(2 / 3)
    assert rows.loc["figure2-recall", "ours"] == pytest.approx(0.9333, abs=1e-4)  # mean of 1.0, 0.9, 0.9
    assert rows.loc["figure2-recall", "verdict"] == "holds"
    # count(p') − 2·count(p''_3) per trial: 10, 20, −10
    assert rows.loc["figure2-top-region", "ours"] == pytest.approx(20 / 3)
    assert rows.loc["figure2-top-region", "verdict"] == "partly"


def test_chapters_03_and_04_configs_differ_only_in_the_targets():
    shared = dict(n_trials=2, seed=0, algorithms=["ppo", "grpo"], betas=[0.5, 1.0], checkpoints=[5, 10],
                  iteration_beta=1.0, n_low_recall=4, beta_kd=1.25, sft_iterations=10, kd_iterations=10,
                  eval_samples=100)
    setup, sweeps = sweep_configs(**shared)
    assert setup == Setup(n_trials=2, sft_iterations=10, kd_iterations=10, eval_samples=100)
    # the cache keys of chapter 03 are those of a Sweep that names no targets
    assert sweeps["ppo"] == Sweep(algorithm="ppo", betas=(0.5, 1.0), checkpoints=(5, 10), iteration_beta=1.0)
    _, two = sweep_configs(**shared, targets=[7, 6])
    assert list(two) == ["ppo", "grpo"] and two["grpo"].targets == (7, 6)
    with pytest.raises(ValueError, match="checkpoints"):
        sweep_configs(**{**shared, "checkpoints": []})


def test_sweep_words_by_hand():
    results = _paired_results()
    table, pooled = claims_table(results), pooled_claims(results)
    assert list(claims_display(table).columns[:3]) == ["algorithm", "metric", "panel"]
    assert set(claims_display(table).metric) == {"reward", "target_precision"}
    assert set(precision_display(table).index) == set(table.index[table.metric == "overall_precision"])
    assert precision_verdict(table).startswith("A-K − K-A in Overall Precision: the 95 % interval lies above 0 in 0 "
                                               "of 2 settings and below 0 in 0")
    verdict = overall_verdict(pooled, table)
    assert verdict.count("\n") == 1 and "A-K − K-A in Final Average Reward (per-trial mean over each sweep" in verdict
    rows = sweep_claim_rows(table, pooled, "03_mog_alignment", FIGURES["03_mog_alignment"],
                            PAPER_FIGURES["03_mog_alignment"], "a note").set_index("claim_id")
    assert list(rows.index) == ["ppo-reward", "ppo-target_precision", "ppo-reward-variance"]
    assert rows.loc["ppo-reward", "verdict"] == "holds" and rows.loc["ppo-reward", "ours"] == pytest.approx(4.0)
    assert rows.loc["ppo-target_precision", "verdict"] == "does not hold"
    assert rows.loc["ppo-reward-variance", "ours"] == pytest.approx(1.0 - 7.0 ** 0.5)
    assert rows.figure.eq("fig-03-ppo").all() and rows.reason.str.endswith("; a note").all()
    assert rows.loc["ppo-reward", "paper_value"] == "A-K > K-A (Figure 3)"


def test_sweep_chapter_on_a_tiny_run(tmp_path):
    store = ResultStore("test", root=tmp_path)
    setup, sweeps = sweep_configs(n_trials=2, seed=1, algorithms=["grpo"], betas=[1.0], checkpoints=[3],
                                  iteration_beta=1.0, n_low_recall=4, beta_kd=1.25, sft_iterations=30,
                                  kd_iterations=20, eval_samples=200)
    run = sweep_chapter(store, "03_mog_alignment", setup, sweeps)
    assert list(run.references) == ["p' (A-K reference)", "p'' (K-A reference)"]
    assert len(run.coverage) == len(run.reference_scores) == 4 and len(run.reference_coverage) == 2
    assert set(run.claims.metric) == {"reward", "target_precision", "overall_recall", "overall_precision"}
    assert compute_times(run).startswith(f"{len(run.results)} scored models; compute time when first made: grpo ")
    summary, sentence = algorithm_report(run, "grpo")
    assert summary.shape[0] == 2 and sentence.startswith("GRPO") and "K-A's reference p''" in sentence.split("\n")[1]
