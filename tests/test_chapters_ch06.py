"""Chapter 06's words (alignkd.chapters.ch06_report): sentences, verdicts, display tables and claim rows on
hand-made tables with numbers worked by hand."""

import math

import pandas as pd
import pytest

from alignkd import claims
from alignkd.cache import ResultStore
from alignkd.chapters import ch06_llm, ch06_report
from alignkd.lm import summary
from alignkd.lm.algorithms import alignment_config
from tests.test_lm_summary import NAN, metrics, pipeline_rows, premise  # noqa: F401  (metrics: a fixture)


def test_final_sentences_pick_the_verdict(metrics):
    gaps = summary.final_gaps(metrics, main_tau=0.95)
    ppo, dpo = ch06_report.final_sentences(gaps)
    assert ppo.startswith("ppo: final reward A-K 2.000 ± 1.000 vs K-A 1.333 ± ")
    assert "This supports the paper's claim" in ppo and "+0.667 [" in ppo
    assert "This does not support the paper's claim" in dpo
    failed = ch06_report.final_sentences(gaps, premise(0.04, 0.04, 0.03))[0]
    assert "supports (on references that FAIL the premise" in failed
    assert "FAIL" not in ch06_report.final_sentences(gaps, premise(0.04, 0.04, 0.001))[0]


def test_target_share_sentences(metrics):
    metrics.loc[metrics["model"] == "p''_KA", "target_share"] = 0.012
    gaps = summary.final_gaps(metrics, main_tau=0.95)
    assert ch06_report.target_share_sentences(gaps)[0] == \
        "ppo: share of the target topic after alignment, K-A 1.2%, A-K 200.0%."


def test_record_claims_rows(tmp_path, metrics):
    store = ResultStore("test", root=tmp_path)
    gaps = summary.final_gaps(metrics, main_tau=0.95)
    rows = ch06_report.record_claims(store, gaps, premise(0.04, 0.04, 0.004))
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
    ch06_report.record_claims(store, gaps, premise(0.04, 0.01, 0.004))  # p' kept only 25 %
    stored = claims.load(store).set_index("claim_id")
    assert stored.loc["premise", "verdict"] == "does not hold"
    assert stored.loc["premise", "reason"].startswith("PREMISE FAILS: p' did not keep the target")
    assert stored.loc["ak_reward_ppo", "verdict"] == "not testable here"
    assert math.isnan(stored.loc["ak_reward_ppo", "ours"])
    claims.clear(store, "06_llm")
    one_seed = summary.final_gaps(pd.DataFrame(pipeline_rows("ppo", ak=[1.0], ka=[0.0])), main_tau=0.95)
    rows = ch06_report.record_claims(store, one_seed, None)  # no premise row on a real LM
    assert list(rows["claim_id"]) == ["ak_reward_ppo", "ak_target_precision_ppo"]
    assert rows.iloc[0]["reason"] == "fewer than two seeds: no interval"


def test_length_table_and_readings():
    gaps = pd.DataFrame({"algorithm": ["ppo", "ppo", "dpo_online", "dpo_online", "grpo"], "seed": [0, 1, 0, 1, 0],
                         "raw": [0.4, 0.2, 0.3, 0.1, -0.1], "matched": [0.2, 0.1, -0.05, -0.05, 0.3],
                         "coverage_a": 0.9, "coverage_b": 0.8, "mean_length_a": [10.0, 12.0, 8.0, 8.0, 5.0],
                         "mean_length_b": 9.0})
    table = ch06_report.length_table(gaps)
    assert list(table.index) == ["ppo", "dpo_online", "grpo"]
    assert table.loc["ppo", "raw"] == pytest.approx(0.3) and table.loc["ppo", "mean_length_a"] == 11.0
    ppo, dpo, grpo = ch06_report.length_sentences(gaps)
    assert ppo == ("ppo: A-K − K-A reward +0.300 raw, +0.150 at matched length (mean length 11.0 vs 9.0 tokens); "
                   "the gain survives at matched length (50% of it).")
    assert dpo.endswith("the gain vanishes at matched length: it is a length effect.")
    assert grpo.endswith("A-K has no reward gain here, so there is none for length to explain.")
    assert ch06_report.length_reading(0.0, 0.5).startswith("A-K has no reward gain")


def test_decomposition_sentence():
    parts = {"gap": 0.5, "pruning": 0.25, "size": 0.125, "rest": 0.125}
    assert ch06_report.decomposition_sentence("ppo", parts) == (
        "ppo: A-K − K-A = +0.500 reward; losing the target (pruned vs kept, p'''s size) accounts for +0.250, "
        "p'''s size with the target kept for +0.125, the rest +0.125.")


def test_app_d_table_beside_the_paper_and_trade_sentences():
    rows = []
    for tau, precision, recall in ((0.95, -2.0, -4.0), (0.925, -1.5, -4.5)):
        for seed in (0, 1):
            rows.append({"algorithm": "ppo", "seed": seed, "model": "p''_AK", "final_tau": tau,
                         "overall_precision": precision + 0.1 * seed, "overall_recall": recall})
    metrics = pd.DataFrame(rows)
    table = ch06_report.app_d_table(metrics).set_index(["algorithm", "final_tau"])
    assert table.loc[("ppo", 0.95), "overall_precision"] == pytest.approx(-1.95)
    assert table.loc[("ppo", 0.925), "paper_precision"] == -1.9880
    assert math.isnan(table.loc[("dpo_online", 0.975), "overall_precision"])  # the paper's row stays, ours is missing
    (sentence,) = ch06_report.final_tau_sentences(metrics, 0.95)
    assert sentence.startswith("ppo: final KD τ 0.925 vs 0.95: precision +0.500 (seed std 0.071), recall -0.500")
    assert sentence.endswith("(App. D: a lower τ buys precision with recall) holds here.")
    metrics.loc[metrics["final_tau"] == 0.925, "overall_recall"] = -3.0
    assert ch06_report.final_tau_sentences(metrics, 0.95)[0].endswith("does not hold here.")


def test_selected_steps_and_target_share_table():
    trajectories = pd.DataFrame({"algorithm": "ppo", "pipeline": ["K-A"] * 3 + ["A-K"] * 3, "seed": [0, 0, 1, 0, 1, 1],
                                 "iteration": [0, 10, 0, 0, 0, 10], "selected_step": [10, 10, 0, 20, 30, 30]})
    steps = ch06_report.selected_steps(trajectories)
    assert steps.loc[("ppo", "K-A"), 0] == 10 and steps.loc[("ppo", "A-K"), 1] == 30
    metrics = pd.DataFrame({"algorithm": "ppo", "model": ["p''_KA", "p''_KA", "p''"], "target_share": [0.1, 0.3, 0.05]})
    table = ch06_report.target_share_table(metrics)
    assert table.loc[("ppo", "p''_KA"), ("mean", "target_share")] == pytest.approx(0.2)


def test_premise_note_and_reference_note():
    assert ch06_report.premise_note(None) == ch06_report.NO_PREMISE
    assert ch06_report.premise_note(premise(0.04, 0.04, 0.004)).startswith("PREMISE PASSES.")

    class Refs:  # the two attributes of `References` the note reads
        class oracle:
            fold_threshold = 3.14159

        class p_star:
            weights = [0.75, 0.25]

        target_topic = 1

    assert ch06_report.reference_note(Refs) == ("fold threshold τ_f = 3.1416 (paper, SmolLM2 p_target: 8.4636)\n"
                                            "p* topic weights [0.75, 0.25]; target = topic 1 (25.0% of p*)")
    Refs.target_topic = None
    assert "\n" not in ch06_report.reference_note(Refs)


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
    rows = ch06_report.record_app_d_claims(store, metrics, 0.95).set_index("claim_id")
    lower, higher = rows.loc["app_d_ppo_0.925"], rows.loc["app_d_ppo_0.975"]
    assert lower["ours"] == pytest.approx(4 / 30) and 0.1 - 1e-9 <= lower["low"] <= lower["high"] <= 0.2 + 1e-9
    assert lower["verdict"] == "holds" and "gains precision and loses recall" in lower["claim"]
    assert higher["ours"] == pytest.approx(0.1) and higher["verdict"] == "partly"  # recall as claimed, precision not
    assert "recall +0.100 [+0.100, +0.100] (holds)" in higher["reason"]
    assert list(claims.load(store)["claim_id"]) == ["app_d_ppo_0.925", "app_d_ppo_0.975"]
    one_seed = ch06_report.app_d_claims(metrics[metrics.seed == 0], 0.95)
    assert {row["verdict"] for row in one_seed} == {"not testable here"}


def test_algorithm_names_are_one_glossary():
    from alignkd.lm.algorithms import ALGORITHMS as LM
    from alignkd.mog.algorithms import ALGORITHMS as MOG

    # an LM algorithm is one of MoG's concepts under the same name and label (CONTRIBUTING's glossary)
    assert {name: LM[name].label for name in LM} == {name: MOG[name].label for name in LM}
    assert set(ch06_report.PAPER_APP_D["algorithm"]) == {"ppo", "dpo_online"} <= set(LM)
    assert set(ch06_report.PAPER_NAMES) == {"ppo", "dpo_online"}


def test_coverage_sentences_and_claim_by_hand():
    sweep = pd.DataFrame({"algorithm": "dpo_online", "seed": [0, 1, 2] * 3, "tau_topic": [1.0] * 3 + [0.7] * 3 + [0.5] * 3,
                          "reference_target_share": [0.04] * 3 + [0.02] * 3 + [0.005] * 3,
                          "gap_reward": [0.1, 0.2, 0.0, 0.3, 0.3, 0.3, 0.5, 0.7, 0.6]})
    sweep["gap_target_share"] = [0.0, 0.01, 0.0, 0.01, 0.01, 0.01, 0.02, 0.02, 0.02]
    (line,) = ch06_report.coverage_sentences(sweep)
    assert line.startswith("dpo_online: from p'' writing 4.00% of the target to 0.50%, A-K − K-A changes by +0.500 [")
    assert "the reward gap grows as p'' loses the target" in line
    claim = ch06_report.coverage_claim(sweep, "dpo_online")
    assert (claim["claim_id"], claim["ours"], claim["verdict"]) == ("coverage_dpo_online", pytest.approx(0.5), "holds")

    class Failed:  # a premise whose p' lost the target: the trend is no test of the mechanism
        kept = False

        @staticmethod
        def verdict():
            return "PREMISE FAILS"

    assert ch06_report.coverage_claim(sweep, "dpo_online", Failed)["verdict"] == "not testable here"


def _table(recall, first, later):
    names = ["p*", "p'", "p''", "unigram", "uniform"]
    return pd.DataFrame({"model": names, "overall_recall": recall, "first_token": first, "later_tokens": later})


def test_recall_verdict_says_whether_p_prime_beats_the_unigram_and_where():
    short = ch06_report.recall_verdict(_table([-3.9, -7.0, -7.3, -7.2, -10.8], [-3, -4.0, -4.6, -4.5, -10.8],
                                  [-4, -8.0, -8.2, -8.1, -10.8]))
    assert short.startswith("Recall (per-token log-likelihood of p*'s own samples): p* -3.90, p' -7.00, p'' -7.30, "
                            "the unigram of p''s KD data -7.20, a uniform guess -10.80.")
    assert "p' is +0.20 nats/token from the unigram (+0.50 on the first token after the prompt, +0.10 on the tokens" in short
    assert "p'' -0.10." in short and "lies mostly in the first token" in short and "no claim about K-A" in short
    worse = ch06_report.recall_verdict(_table([-3.9, -7.5, -7.6, -7.2, -10.8], [-3, -4.6, -4.6, -4.5, -10.8],
                                  [-4, -8.2, -8.2, -8.1, -10.8]))
    assert "p' gained nothing over them" in worse
    learnt = ch06_report.recall_verdict(_table([-3.9, -6.0, -6.5, -7.2, -10.8], [-3, -4.0, -4.6, -4.5, -10.8],
                                   [-4, -6.5, -7.0, -8.1, -10.8]))
    assert "p' is +1.20 nats/token" in learnt and learnt.endswith("keeps more of p* than p''.")
    assert "no claim" not in learnt


def test_premise_pointer_is_one_clause_that_names_the_verdict():
    assert ch06_report.premise_pointer(premise(0.04, 0.04, 0.004)) == "(premise: see above — PASSES)"
    assert ch06_report.premise_pointer(premise(0.04, 0.01, 0.004)) == "(premise: see above — FAILS)"  # p' kept 25 %
    assert ch06_report.premise_pointer(None) == "(premise: not measurable on this ground truth)"


def test_training_sentence_reads_the_epochs_and_the_decay_gain_from_the_logs():
    log = pd.DataFrame({"epoch": [0.5, 1.0, 2.0, 3.0, 3.5], "phase": ["stable", "stable", "stable", "decay", "decay"],
                        "eval_loss": [NAN, 2.5, 2.4, 2.3, 2.25]})
    flat = pd.DataFrame({"epoch": [1.0, 2.0], "phase": "stable", "eval_loss": [2.0, 1.9]})
    assert ch06_report.training_sentence({"p'": log, "p''": flat}) == (
        "p' trained 3.5 epochs (its held-out loss stopped improving after epoch 2; the decay phase then lowered it by "
        "0.150 nats/token); p'' trained 2 epochs (no decay phase: the held-out loss improved until the last epoch).")


def test_single_tau_note_and_the_final_kd_temperatures_per_algorithm():
    assert ch06_report.single_tau_note([0.95]).startswith("One final KD temperature (0.95); ")
    assert ch06_llm.final_kd_taus(algorithms=["ppo", "kto"], final_taus=[0.95, 0.925],
                                  tau_sweep_algorithms=["ppo", "dpo_online"]) == {"ppo": [0.95, 0.925], "kto": [0.95]}


def test_the_premise_bound_on_p_double_prime():
    assert premise(0.04, 0.04, 0.004).prune_bound == pytest.approx(0.01)  # 25 % of p*'s 4 %


def _budget_dose() -> pd.DataFrame:
    """Two algorithms, three seeds, budgets 50 and 400: `ppo` trapped (K-A stays at 1 %), `grpo` delayed (K-A gets
    to A-K's 30 %)."""
    rows = []
    for algorithm, ka_last in (("ppo", [0.01, 0.02, 0.015]), ("grpo", [0.30, 0.33, 0.29])):
        for model, shares in (("p''_KA", {50: [0.01, 0.02, 0.01], 400: ka_last}),
                              ("p''_AK", {50: [0.30, 0.31, 0.29], 400: [0.30, 0.32, 0.31]})):
            for iteration, values in shares.items():
                rows += [{"algorithm": algorithm, "seed": seed, "model": model, "iteration": iteration,
                          "target_share": value} for seed, value in enumerate(values)]
    return pd.DataFrame(rows)


def test_budget_sentences_group_the_readings_by_reference_anchor():
    dose = _budget_dose()
    alignments = {"ppo": alignment_config("ppo"), "grpo": alignment_config("grpo")}
    ppo, grpo, grouped = ch06_report.budget_sentences(dose, alignments)
    assert ppo.startswith("ppo (reverse KL in the reward, per token): A-K − K-A in target share +28.67 [")
    assert ppo.endswith("after 400; K-A's own share moved by +0.17 points: trapped.")
    assert grpo.endswith(": delayed.") and "+30.33 points" not in grpo
    assert grouped == ("By reference anchor — trapped: ppo (reverse KL in the reward, per token); "
                       "delayed: grpo (k3 penalty in the loss (forward-KL-like gradient)).")
    assert list(ch06_report.budget_table(dose)["reading"]) == ["trapped", "delayed"]


def test_settled_sentence_names_what_still_moves():
    dose = _budget_dose()
    assert "It has not settled for grpo (delayed): their gaps at 50 iterations" in ch06_report.settled_sentence(dose, 50)
    only_ppo = dose[dose["algorithm"] == "ppo"]
    assert ch06_report.settled_sentence(only_ppo, 50).endswith("the answer has settled by then.")
    assert "the dose runs 50 to 400" in ch06_report.settled_sentence(only_ppo, 50)


def test_budget_claims_read_the_gap_after_the_largest_budget(tmp_path):
    store = ResultStore("test", root=tmp_path)
    rows = ch06_report.record_budget_claims(store, _budget_dose(), premise(0.04, 0.04, 0.004)).set_index("claim_id")
    assert rows.loc["budget_ppo", "verdict"] == "holds"
    assert rows.loc["budget_ppo", "ours"] == pytest.approx(0.31 - 0.015)
    assert rows.loc["budget_ppo", "reason"].endswith(": trapped")
    assert rows.loc["budget_grpo", "verdict"] in ("partly", "does not hold")
    assert list(claims.load(store)["claim_id"]) == ["budget_ppo", "budget_grpo"]
    failed = ch06_report.budget_claim(_budget_dose(), "ppo", premise(0.04, 0.04, 0.03))
    assert failed["verdict"] == "not testable here" and "premise" in failed["reason"]
