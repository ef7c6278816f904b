"""KTO and SimPO against chapter 05's strata (`alignkd.mog.successors`): hand-made frames with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from alignkd.cache import ResultStore
from alignkd.claims import make_row
from alignkd.mog import coverage_study
from alignkd.mog.coverage_study import CoverageStudy, with_coverage
from alignkd.mog.pipelines import Setup
from alignkd.mog.successors import (cached_coverage_results, coverage_following, coverage_study_key,
                                    escape_claim_rows, escape_sentence, following_claim_rows, following_sentences,
                                    simpo_escape, trial_gaps)
from alignkd.stats import unpaired_bootstrap

BETA_KD = 10.0


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


def test_unpaired_bootstrap_difference_of_means_is_deterministic():
    first = unpaired_bootstrap([2.0, 3.0, 4.0], [0.0, 1.0])
    assert first.estimate == pytest.approx(2.5)
    assert first.low <= 2.5 <= first.high and first.low < first.high
    assert unpaired_bootstrap([2.0, 3.0, 4.0], [0.0, 1.0]) == first  # same seed, same interval
    assert tuple(unpaired_bootstrap([5.0, 5.0], [1.0, 1.0, 1.0])) == (4.0, 4.0, 4.0)  # no spread: no width
    one = unpaired_bootstrap([2.0], [0.0, 1.0])
    assert one.estimate == pytest.approx(1.5) and math.isnan(one.low) and math.isnan(one.high)
    # a clearly separated pair of samples gives an interval above zero
    wide = unpaired_bootstrap(np.arange(10.0) + 20, np.arange(10.0))
    assert wide.estimate == pytest.approx(20.0) and wide.low > 10


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
    claims = following_claim_rows(list(rows.values()), 4).set_index("claim_id")
    assert claims.loc["kto-gap-follows-coverage", "paper_value"] == \
        "persists in KTO whenever a low-recall reference is retained (§3.4)"
    assert claims.loc["kto-gap-follows-coverage", "ours"] == pytest.approx(2.5)
    assert claims.loc["simpo-gap-follows-coverage", "verdict"] == "not testable here"
    assert claims.loc["dpo_online-gap-follows-coverage", "verdict"] == "partly"  # [0, 0] contains 0
    for row in claims.reset_index().to_dict("records"):  # every row is one `claims.record` accepts
        make_row(**{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    sentences = following_sentences(list(rows.values()))
    assert sentences[1].startswith("KTO at β_KD 10: A-K − K-A in final reward is +3.00 on the 3 lost-target trials "
                                   "and +0.50 on the 2 kept-target trials; lost − kept +2.50 [")
    assert sentences[2] == ("SimPO: not testable here (simpo is not among the algorithms this run of chapter 05 "
                            "aligned).")


def test_a_stratum_of_one_trial_is_not_testable():
    data = with_coverage(_results("kto", [0.0] * 3, [2.0, 3.0, 1.0]), _coverage([True, False, False]))
    (row,) = coverage_following(data, BETA_KD, 4, algorithms=("kto",))
    assert row.n_lost == 1 and math.isnan(row.difference.low)
    assert row.reason == "fewer than two trials in a stratum at β_KD 10 (1 lost-target trial)"
    claim = following_claim_rows([row], 4).iloc[0]
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
    rows = escape_claim_rows(escape, "β_KD 10, p''_4").set_index("claim_id")
    assert rows.loc["simpo-ak-advantage-persists", "verdict"] in ("holds", "partly")
    assert rows.loc["simpo-recall-cost", "ours"] == pytest.approx(-1.0)
    assert rows.loc["simpo-recall-cost", "verdict"] == "holds"
    text = escape_sentence(escape, "β_KD 10, p''_4")
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
    rows = escape_claim_rows(one, "β_KD 10")
    assert rows.verdict.tolist() == ["not testable here"] * 2 and rows.ours.isna().all()
    assert escape_sentence(one, "β_KD 10").startswith("SimPO against the trap: not testable here (only 1 trial")


def test_cached_results_are_read_under_cached_studys_key_and_never_computed(tmp_path, monkeypatch):
    setup = Setup(n_trials=2, seed=1)
    study = CoverageStudy(beta_kds=(2.0,), algorithms=("simpo", "dpo_online"), min_lost=0)
    store = ResultStore("test", root=tmp_path)
    coverage = _coverage([True, True]).assign(beta_kd=2.0)
    # cached_study with its expensive steps replaced: it saves each algorithm's table under its own key
    monkeypatch.setattr(coverage_study, "cached_high_recall", lambda *a, **k: None)
    monkeypatch.setattr(coverage_study, "cached_reference_coverage", lambda *a, **k: ({}, coverage))
    monkeypatch.setattr(coverage_study, "run_algorithm",
                        lambda algorithm, *a, **k: _results(algorithm, [0.0, 1.0], [2.0, 3.0]).assign(beta_kd=2.0))
    monkeypatch.setattr(CoverageStudy, "check_setup", lambda self, setup: None)
    coverage_study.cached_study(store, setup, CoverageStudy(beta_kds=(2.0,), algorithms=("simpo",), min_lost=0))
    assert store.has("mog_coverage_study", coverage_study_key(setup, study, "simpo"))
    monkeypatch.setattr(coverage_study, "run_algorithm", lambda *a, **k: pytest.fail("must not compute"))
    results, missing = cached_coverage_results(store, setup, study, ["simpo", "dpo_online"])
    assert missing == ["dpo_online"] and set(results.algorithm) == {"simpo"} and len(results) == 4
    empty, missing = cached_coverage_results(ResultStore("other", root=tmp_path / "x"), setup, study, ["simpo"])
    assert empty.empty and missing == ["simpo"]
