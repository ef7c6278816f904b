"""The words of chapters 05 (`ch05_mog_coverage`) and 07 (`ch07_pad`), and chapter 07's configs, by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from alignkd.chapters import ch05_mog_coverage as ch05, ch07_pad as ch07
from alignkd.claims import make_row
from alignkd.mog import coverage_study
from alignkd.mog.coverage_study import AK_CONTROL, ALIGNED, CoverageStudy, lost_counts, stratified_gaps, with_coverage
from alignkd.mog.pipelines import Setup
from alignkd.mog.successors import coverage_following, simpo_escape, trial_gaps
from alignkd.pad.mog import Comparison, PADConfig

BETA_KD = 10.0
CONFIGS = dict(n_trials=3, seed=1, algorithm="ppo", align_beta=1.0, align_iterations=5,
               pad_variants=["ppd/fresh", "vpd/p_low"], n_responses=4, group_size=0, pad_beta=1.0, temperature=0.8,
               pad_iterations=20, pad_checkpoints=[10, 20, 30], n_low_recall=4, beta_kd=1.25, sft_iterations=10,
               kd_iterations=10, eval_samples=100)


def _coverage(lost: list[bool]) -> pd.DataFrame:
    return pd.DataFrame([{"n_low_recall": 4, "beta_kd": BETA_KD, "trial": t, "lost": bool(x),
                          "target_share": 0.0 if x else 0.12, "log_density_at_target": -9.0}
                         for t, x in enumerate(lost)])


def _results(algorithm: str, k_a: list[float], a_k: list[float], recall_ka=None, order=None) -> pd.DataFrame:
    """K-A and A-K lines of one algorithm at BETA_KD; `order` shuffles the rows (pairing must not rely on it)."""
    recall_ka = recall_ka or [-3.0] * len(k_a)
    rows = [{"algorithm": algorithm, "pipeline": "K-A", "n_low_recall": 4, "beta_kd": BETA_KD, "trial": t,
             "reward": r, "overall_recall": recall_ka[t]} for t, r in enumerate(k_a)]
    rows += [{"algorithm": algorithm, "pipeline": "A-K", "n_low_recall": 4, "beta_kd": BETA_KD, "trial": t,
              "reward": r, "overall_recall": -2.5} for t, r in enumerate(a_k)]
    frame = pd.DataFrame(rows)
    return frame.iloc[order].reset_index(drop=True) if order is not None else frame


# --------------------------------------------------------------------------- chapter 05


def _study_data():
    """Four trials at β_KD 10 and 20: trials 0, 1 lost at 10 (K-A 1), 2, 3 kept (K-A 6); A-K 8, p'_AK 9."""
    coverage = pd.DataFrame([{"n_low_recall": 4, "beta_kd": b, "trial": t, "lost": t < lost,
                              "target_share": 0.0 if t < lost else 0.12, "log_density_at_target": -9.0}
                             for b, lost in ((10.0, 2), (20.0, 3)) for t in range(4)])
    rows = []
    for t in range(4):
        rows.append({"algorithm": "ppo", "pipeline": ALIGNED, "n_low_recall": 0, "beta_kd": 0.0, "trial": t,
                     "reward": 9.0})
        rows.append({"algorithm": "ppo", "pipeline": AK_CONTROL, "n_low_recall": 4, "beta_kd": 0.0, "trial": t,
                     "reward": 7.0 + t})
        for b in (10.0, 20.0):
            rows.append({"algorithm": "ppo", "pipeline": "K-A", "n_low_recall": 4, "beta_kd": b, "trial": t,
                         "reward": 1.0 if t < 2 else 6.0})
            rows.append({"algorithm": "ppo", "pipeline": "A-K", "n_low_recall": 4, "beta_kd": b, "trial": t,
                         "reward": 8.0})
    return with_coverage(pd.DataFrame(rows), coverage), coverage


def test_study_claim_rows_and_verdict_from_hand_made_strata():
    data, coverage = _study_data()
    gaps, counts = stratified_gaps(data, "reward"), lost_counts(coverage)
    rows = ch05.study_claim_rows(gaps, counts, CoverageStudy(), 10.0, 4).set_index("claim_id")
    assert rows.loc["ppo-reward-lost", "verdict"] == "holds" and rows.loc["ppo-reward-lost", "ours"] == 7.0
    assert rows.loc["ppo-reward-kept", "ours"] == pytest.approx(2.0)
    assert (rows.chapter == ch05.CHAPTER).all()
    verdict = ch05.study_verdict(gaps, counts, CoverageStudy(), 10.0, 4)
    assert verdict.startswith("Trials whose p''_4 lost the target: 2/4 at β_KD 10, 3/4 at β_KD 20.\nPPO at β_KD 10: "
                              "A-K − K-A in Final Average Reward is +7.00")
    assert "(n = 2) in the trials whose reference lost the target" in verdict
    untestable = ch05.study_claim_rows(gaps, counts, CoverageStudy(), None, 4)
    assert untestable.verdict.tolist() == ["not testable here"]
    assert "not testable at this size" in ch05.study_verdict(gaps, counts, CoverageStudy(), None, 4)


def test_coverage_chapter_writes_its_tables_verdicts_and_claims(monkeypatch):
    data, coverage = _study_data()
    results = data.drop(columns=["target_share", "log_density_at_target", "lost"]).assign(
        seconds=3.0, target_precision=lambda d: d.reward / 10)
    results = results[~results.pipeline.isin([ALIGNED, AK_CONTROL]) | (results.beta_kd == 10.0)]
    setup = Setup(n_trials=4, seed=0)
    study = CoverageStudy(beta_kds=(10.0, 20.0), algorithms=("ppo",), min_lost=2)
    monkeypatch.setattr(ch05, "cached_study", lambda store, s, st: (results, coverage))
    run = ch05.coverage_chapter(None, setup, study)
    assert run.k_main == 4 and run.trap == 10.0
    assert ch05.compute_times(run).endswith("scored models; compute time when first made: ppo 3 s")
    assert set(ch05.stratum_gaps(run).versus) == {"A-K"} and set(ch05.control_gaps(run).stratum) == {"all"}
    assert len(ch05.gap_tables(run)) == 2
    text = ch05.verdicts(run)
    assert text.count("Trials whose p''_4 lost the target") == 2 and "\n\n" in text  # reward, then target precision
    rows = ch05.claim_rows(run)
    assert {"ppo-reward-lost", "ppo-target_precision-lost"} <= set(rows.claim_id)
    assert [f.algorithm for f in run.following] == ["dpo_online", "kto", "simpo"]
    assert (ch05.following_rows(run).verdict == "not testable here").all()  # chapter 05 ran only PPO here


def test_gap_follows_coverage_on_hand_made_strata():
    # trials 0-2 lost (gaps 2, 3, 4), trials 3-4 kept (gaps 0, 1)
    coverage = _coverage([True, True, True, False, False])
    results = pd.concat([_results("kto", [0.0] * 5, [2.0, 3.0, 4.0, 0.0, 1.0]),
                         _results("dpo_online", [1.0] * 5, [1.0] * 5)], ignore_index=True)
    data = with_coverage(results, coverage)
    gaps = trial_gaps(data, beta_kd=BETA_KD, n_low_recall=4)
    kto = gaps[gaps.algorithm == "kto"].set_index("trial")
    assert kto.gap.tolist() == [2.0, 3.0, 4.0, 0.0, 1.0] and kto.lost.tolist() == [True] * 3 + [False] * 2
    rows = {r.algorithm: r for r in coverage_following(data, BETA_KD, 4)}
    # the strata's mean gaps are chapter 05's own stratified gaps
    chapter = coverage_study.stratified_gaps(data, "reward").query("algorithm == 'kto' and versus == 'A-K'")
    assert chapter.set_index("stratum")["diff"].loc[["lost", "kept"]].tolist() == pytest.approx([3.0, 0.5])
    kto = rows["kto"]
    assert (kto.n_lost, kto.n_kept, kto.lost_gap, kto.kept_gap) == (3, 2, 3.0, 0.5)
    assert kto.difference.estimate == pytest.approx(2.5) and kto.difference.low <= 2.5 <= kto.difference.high
    assert tuple(rows["dpo_online"].difference) == (0.0, 0.0, 0.0)
    assert "not among the algorithms" in rows["simpo"].reason  # chapter 05 did not run it
    claims = ch05.following_claim_rows(list(rows.values()), 4).set_index("claim_id")
    assert claims.loc["kto-gap-follows-coverage", "paper_value"] == \
        "persists in KTO whenever a low-recall reference is retained (§3.4)"
    assert claims.loc["kto-gap-follows-coverage", "ours"] == pytest.approx(2.5)
    assert claims.loc["simpo-gap-follows-coverage", "verdict"] == "not testable here"
    assert claims.loc["dpo_online-gap-follows-coverage", "verdict"] == "partly"  # [0, 0] contains 0
    for row in claims.reset_index().to_dict("records"):  # every row is one `claims.record` accepts
        make_row(**{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    sentences = ch05.following_sentences(list(rows.values()))
    assert sentences[1].startswith("KTO at β_KD 10: A-K − K-A in final reward is +3.00 on the 3 lost-target trials "
                                   "and +0.50 on the 2 kept-target trials; lost − kept +2.50 [")
    assert sentences[2] == ("SimPO: not testable here (simpo is not among the algorithms this run of chapter 05 "
                            "aligned).")


def test_a_stratum_of_one_trial_is_not_testable():
    data = with_coverage(_results("kto", [0.0] * 3, [2.0, 3.0, 1.0]), _coverage([True, False, False]))
    (row,) = coverage_following(data, BETA_KD, 4, algorithms=("kto",))
    assert row.n_lost == 1 and math.isnan(row.difference.low)
    assert row.reason == "fewer than two trials in a stratum at β_KD 10 (1 lost-target trial)"
    claim = ch05.following_claim_rows([row], 4).iloc[0]
    assert claim.verdict == "not testable here" and "1 lost-target trial" in claim.reason
    (none,) = coverage_following(data, None, 4, algorithms=("kto",))
    assert "no β_KD" in none.reason


def test_simpo_escape_pairs_by_trial_not_by_row_order():
    coverage = _coverage([True, True, True, False])
    # SimPO's K-A rows reversed: A-K − K-A is +1, +2, +3 on the lost trials only if paired by trial id
    simpo = _results("simpo", [0.0, 1.0, 2.0, 9.0], [1.0, 3.0, 5.0, 0.0], recall_ka=[-4.0, -4.0, -5.0, -9.0],
                     order=[3, 2, 1, 0, 4, 5, 6, 7])
    dpo = _results("dpo_online", [0.0] * 4, [0.0] * 4, recall_ka=[-3.0, -3.0, -4.0, 0.0],
                   order=[2, 0, 3, 1, 4, 5, 6, 7])
    escape = simpo_escape(pd.concat([simpo, dpo], ignore_index=True), coverage, BETA_KD, 4)
    assert escape.reason == "" and escape.n_trials == 3 and escape.n_recall == 3
    assert escape.gap.estimate == pytest.approx(2.0)
    assert escape.gap.low <= 2.0 <= escape.gap.high
    assert tuple(escape.recall_cost) == pytest.approx((-1.0, -1.0, -1.0))  # -1 on every lost trial: no width
    rows = ch07.simpo_claim_rows(escape, "β_KD 10, p''_4").set_index("claim_id")
    assert rows.loc["simpo-ak-advantage-persists", "verdict"] in ("holds", "partly")
    assert rows.loc["simpo-recall-cost", "ours"] == pytest.approx(-1.0)
    assert rows.loc["simpo-recall-cost", "verdict"] == "holds"
    text = ch07.simpo_sentence(escape, "β_KD 10, p''_4")
    assert text.startswith("On the 3 trials whose reference lost the target (β_KD 10, p''_4): SimPO's A-K − K-A in "
                           "final reward is +2.00 [")


def test_simpo_escape_says_why_it_is_not_testable():
    coverage = _coverage([True, False, False])
    simpo = _results("simpo", [0.0] * 3, [1.0] * 3)
    dpo = _results("dpo_online", [0.0] * 3, [1.0] * 3)
    missing = simpo_escape(simpo, coverage, BETA_KD, 4, missing=["dpo_online"])
    assert "no cached results for dpo_online" in missing.reason
    one = simpo_escape(pd.concat([simpo, dpo]), coverage, BETA_KD, 4)
    assert one.reason == "only 1 trial lost the target at β_KD 10; at least two are needed"
    rows = ch07.simpo_claim_rows(one, "β_KD 10")
    assert rows.verdict.tolist() == ["not testable here"] * 2 and rows.ours.isna().all()
    assert ch07.simpo_sentence(one, "β_KD 10").startswith("SimPO against the trap: not testable here (only 1 trial")


def test_answer_claims_test_the_escape_on_the_lost_target_trials_only():
    def rows(pipeline, rewards, iterations=0):
        return [{"pipeline": pipeline, "trial": t, "iterations": iterations, "reward": r} for t, r in enumerate(rewards)]

    everything = pd.DataFrame(rows("K-A", [1.0, 2.0, 3.0, 4.0]) + rows("A-K", [5.0] * 4)
                              + rows("A→PAD (ppd, p_low)", [0.0] * 4, 10) + rows("A→PAD (ppd, p_low)", [9.0] * 4, 20))
    lost = pd.DataFrame(rows("K-A", [1.0, 2.0, 1.5]) + rows("A-K", [5.0] * 3)
                        + rows("A→PAD (ppd, p_low)", [0.0, 1.0, 0.5], 20))  # always 1 below K-A: the last step counts
    [claim] = ch07.mog_claim_rows(everything, lost, "β_KD 10").to_dict("records")
    assert claim["ours"] == pytest.approx(-1.0) and claim["verdict"] in ("does not hold", "partly")
    assert "3 trials whose p'' lost the target at β_KD 10" in claim["reason"]
    make_row(**claim)
    [untestable] = ch07.mog_claim_rows(everything, None, "none").to_dict("records")
    assert untestable["verdict"] == "not testable here" and pd.isna(untestable["ours"])
    make_row(**untestable)


def test_comparison_rows_table_and_verdicts_from_a_hand_made_run():
    nan = float("nan")

    def row(pipeline, model, seed, reward, target, recall, final_tau=nan):
        return {"algorithm": "ppo", "seed": seed, "pipeline": pipeline, "model": model, "final_tau": final_tau,
                "reward": reward, "target_precision": target, "overall_recall": recall, "overall_precision": -2.0}

    pipelines = pd.DataFrame([
        row("reference", "p''", -1, 0.5, -6.0, -4.0), row("reference", "p_target", -1, 9.0, -1.0, -9.0),
        row("K-A", "p''_KA", 0, 1.0, -5.0, -4.5), row("K-A", "p''_KA", 1, 2.0, -4.0, -4.5),
        row("A-K", "p'_AK", 0, 4.0, -2.0, -3.0),
        row("A-K", "p''_AK", 0, 3.0, -3.0, -3.5, 0.95), row("A-K", "p''_AK", 0, 99.0, 99.0, 99.0, 0.925),
    ])
    pad = pd.DataFrame([row("A→PAD (ppd, p_low)", "p''_PAD", 0, 2.0, -4.0, -3.9),
                        row("A→PAD (ppd, p_low)", "p''_PAD", 1, 2.0, -4.0, -4.1)])
    rows = ch07.lm_comparison_rows(pipelines, [pad], main_tau=0.95)
    assert list(rows["name"]) == ["p''", "K-A", "K-A", "p'_AK (teacher)", "A-K", "A→PAD (ppd, p_low)",
                                  "A→PAD (ppd, p_low)"]  # p_target and the other final τ are gone
    table = ch07.lm_comparison_table(rows)
    assert table.loc["K-A", ("reward", "mean")] == 1.5 and table.loc["K-A", ("reward", "std")] == pytest.approx(0.5 ** 0.5)
    [verdict] = ch07.lm_verdicts(rows)
    # PAD: reward 2.0 > K-A's 1.5 and target precision −4.0 > −4.5, recall −4.0 against A-K's −3.5
    assert "escapes the low-recall trap" in verdict and "(-0.500)" in verdict
    worse = pad.assign(reward=1.0)
    assert "does not escape" in ch07.lm_verdicts(ch07.lm_comparison_rows(pipelines, [worse], main_tau=0.95))[0]


def test_escape_claims_pair_pad_with_k_a_by_seed():
    def row(name, seed, reward):
        return {"name": name, "seed": seed, "reward": reward}

    rows = pd.DataFrame([row("p''", -1, 0.1), row("K-A", 0, 1.0), row("K-A", 1, 2.0), row("K-A", 2, 3.0),
                         row("A→PAD (ppd, p_low)", 0, 2.0), row("A→PAD (ppd, p_low)", 1, 3.5),
                         row("A→PAD (ppd, p_low)", 2, 4.0),  # gaps 1.0, 1.5, 1.0: all above 0
                         row("A→PAD (vpd, fresh)", 0, 1.0)])  # one seed: no interval
    claims = ch07.lm_claim_rows(rows).set_index("claim_id")
    first = claims.loc["lm-escape-0"]
    assert first.ours == pytest.approx(3.5 / 3) and 1.0 <= first.low <= first.ours <= first.high <= 1.5
    assert first.verdict == "holds" and "3 seeds" in first.reason
    second = claims.loc["lm-escape-1"]
    assert second.verdict == "not testable here" and second.ours == 0.0 and "1 seed(s)" in second.reason
    two_seeds = ch07.lm_claim_rows(rows[rows.seed != 2]).set_index("claim_id").loc["lm-escape-0"]
    assert two_seeds.verdict == "not testable here" and two_seeds.ours == pytest.approx(1.25)
    for record in ch07.lm_claim_rows(rows).to_dict("records"):  # every row is one claims.record accepts
        make_row(**{k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()})


def test_escape_claims_are_not_testable_when_the_premise_fails():
    from alignkd.lm.premise import PremiseCheck, PremiseRule

    rows = pd.DataFrame([{"name": n, "seed": s, "reward": r} for n, r in (("K-A", 1.0), ("A→PAD (ppd, p_low)", 2.0))
                         for s in range(3)])
    failed = PremiseCheck(PremiseRule(), pd.DataFrame({"model": ["p*", "p'", "p''"], "target_share": [0.04, 0.04, 0.03],
                                                       "low": [0.04, 0.04, 0.03], "high": [0.04, 0.04, 0.03]}))
    [row] = ch07.lm_claim_rows(rows, premise=failed).to_dict("records")
    assert row["verdict"] == "not testable here" and "fail the premise" in row["reason"]
    assert ch07.lm_claim_rows(rows).iloc[0]["verdict"] == "holds"


# --------------------------------------------------------------------------- chapter 07


def test_chapter_07_configs_build_the_comparison_and_drop_late_checkpoints():
    setup, comparison = ch07.configs(**CONFIGS)
    assert setup == Setup(n_trials=3, seed=1, n_low_recall=4, beta_kd=1.25, sft_iterations=10, kd_iterations=10,
                          eval_samples=100)
    assert comparison == Comparison(algorithm="ppo", beta=1.0, align_iterations=5, pad_checkpoints=(10,), pad=(
        PADConfig(loss="ppd", student_init="fresh", n_responses=4, group_size=None, beta=1.0, tau=0.8, n_iterations=20),
        PADConfig(loss="vpd", student_init="p_low", n_responses=4, group_size=None, beta=1.0, tau=0.8,
                  n_iterations=20)))
    assert ch07.mog_title(comparison) == "PPO β = 1, 5 alignment iterations; PAD n = 4, τ = 0.8, 20 steps"


@pytest.mark.parametrize("field, value, message", [
    ("pad_variants", ["ppd"], r"pad variant 'ppd': must be written loss/student_init"),
    ("pad_variants", ["xyz/fresh"], r"loss = 'xyz'"),
    ("pad_variants", ["ppd/warm"], r"student_init = 'warm'"),
    ("pad_beta", 0.0, r"beta"),
    ("algorithm", "sft", r"algorithm = 'sft'"),
    ("n_trials", 0, r"n_trials"),
])
def test_chapter_07_configs_refuse_a_bad_value_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        ch07.configs(**{**CONFIGS, field: value})


def test_plackett_luce_table_sentence_and_cost_by_hand():
    table = ch07.plackett_luce_table()
    assert list(table.index) == ["abc", "acb", "bac", "bca", "cab", "cba"]
    assert np.allclose(table.sum(), 1.0)
    e = math.e
    assert table.loc["abc", "β = 1"] == pytest.approx(e ** 2 / (e ** 2 + e + e ** .5) * e / (e + e ** .5))
    sentence = ch07.plackett_luce_sentence(table)
    assert sentence.startswith(f"P(a > b > c) = {table.iloc[0, 1]:.4f} at β = 1 (by hand: ")
    assert sentence.count(f"{table.iloc[0, 1]:.4f}") == 2  # the library and the hand computation agree
    cost = ch07.ranking_cost_table()
    assert cost.loc[4, "rankings n!"] == 24 and cost.loc[8, "float32 per group, O(n!)"] == "157.5 KiB"
    assert cost.loc[8, "n = 8 as 2 groups of 4"] == "0.19 KiB" and cost.loc[7, "n = 8 as 2 groups of 4"] == ""


def test_lm_pad_configs_follow_chapter_06s_batch_and_refuse_bad_variants():
    first, second = ch07.lm_pad_configs(["ppd/p_low", "vpd/fresh"], n_responses=4, group_size=2, beta=0.5, tau=0.8,
                                        n_iterations=7, batch_size=10, max_new_tokens=9)
    assert (first.loss, first.student_init, first.group_size, first.groups_per_step) == ("ppd", "p_low", 2, 2)
    assert (second.loss, second.n_iterations, second.max_new_tokens, second.beta) == ("vpd", 7, 9, 0.5)
    [small] = ch07.lm_pad_configs(["ppd/fresh"], n_responses=4, group_size=0, beta=1.0, tau=0.8, n_iterations=1,
                                  batch_size=2, max_new_tokens=9)
    assert small.groups_per_step == 1 and small.group_size is None
    with pytest.raises(ValueError, match="pad variant 'ppd-fresh'"):
        ch07.lm_pad_configs(["ppd-fresh"], n_responses=4, group_size=0, beta=1.0, tau=0.8, n_iterations=1,
                            batch_size=8, max_new_tokens=9)


def test_lm_answer_points_to_the_premise_printed_once():
    from alignkd.lm.premise import PremiseCheck, PremiseRule

    rows = pd.DataFrame([{"name": n, "seed": s, "reward": r, "target_precision": t, "overall_recall": -3.0,
                          "overall_precision": -2.0} for n, r, t in (("K-A", 1.0, -5.0), ("A-K", 3.0, -3.0), ("p''", 0.5, -6.0),
                                                             ("A→PAD (ppd, p_low)", 2.0, -4.0)) for s in range(3)])
    failed = PremiseCheck(PremiseRule(), pd.DataFrame({"model": ["p*", "p'", "p''"], "target_share": [0.04, 0.04, 0.03],
                                                       "low": [0.04, 0.04, 0.03], "high": [0.04, 0.04, 0.03]}))
    text = ch07.lm_answer(ch07.LMComparison(rows, failed))
    first, verdict = text.split("\n")
    assert "premise check printed above FAILED" in first and failed.verdict() not in text
    assert verdict.startswith("A→PAD (ppd, p_low): reward 2.000") and "escapes" in verdict
    assert "no premise check" in ch07.lm_answer(ch07.LMComparison(rows, None)).split("\n")[0]


def test_simpo_on_lost_trials_reads_chapter_05s_cache_under_its_key(tmp_path, monkeypatch):
    from alignkd.cache import ResultStore

    setup = Setup(n_trials=3, seed=1)
    study = CoverageStudy(beta_kds=(BETA_KD,), algorithms=("simpo", "dpo_online"), min_lost=0)
    store = ResultStore("test", root=tmp_path)
    coverage = _coverage([True, True, False])
    results = {"simpo": _results("simpo", [0.0, 1.0, 0.0], [2.0, 3.0, 0.0]),
               "dpo_online": _results("dpo_online", [0.0] * 3, [0.0] * 3)}
    for algorithm, frame in results.items():  # what chapter 05's cached_study saves
        store.frame("mog_coverage_study", coverage_study.study_key(setup, study, algorithm), lambda f=frame: f)
    lost = ch07.LostTrials(setup, study, coverage, BETA_KD, None)
    assert lost.label == "β_KD 10, p''_4" and lost.results is None
    escape = ch07.simpo_on_lost_trials(store, lost, seed=0)
    assert escape.reason == "" and escape.n_trials == 2 and escape.gap.estimate == pytest.approx(2.0)
    assert "2 trials whose reference lost the target" in ch07.simpo_sentence(escape, lost.label)
    assert ch07.LostTrials(setup, study, coverage, None, None).label == "none"
    assert "not testable here" in ch07.lost_note(ch07.LostTrials(setup, study, coverage, None, None))
