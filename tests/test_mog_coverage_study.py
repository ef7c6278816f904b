"""Chapter 05's study: validation before compute, the lost-group check, pairing and strata, a tiny batched run."""

import dataclasses

import pandas as pd
import pytest
import torch

from alignkd.cache import ResultStore
from alignkd.mog.coverage_study import (AK_CONTROL, ALIGNED, CoverageStudy, cached_study, check_lost_groups,
                                        lost_counts, stratified_gaps, trap_beta_kd, with_coverage)
from alignkd.mog.pipelines import Setup

TINY = Setup(n_trials=3, seed=2, sft_iterations=40, kd_iterations=30, eval_samples=300)


def test_bad_study_parameters_name_the_field_before_compute():
    with pytest.raises(ValueError, match=r"CoverageStudy.beta_kds = \(1.25, 0.0\).*finite number > 0"):
        CoverageStudy(beta_kds=(1.25, 0.0))
    with pytest.raises(ValueError, match=r"CoverageStudy.beta_kds.*distinct"):
        CoverageStudy(beta_kds=(2.0, 2.0))
    with pytest.raises(ValueError, match=r"algorithm = 'sft'"):
        CoverageStudy(algorithms=("sft",))
    with pytest.raises(ValueError, match=r"CoverageStudy.min_lost = -1"):
        CoverageStudy(min_lost=-1)
    with pytest.raises(ValueError, match=r"Setup.n_trials = 3: CoverageStudy.min_lost = 20 lost-target trials"):
        CoverageStudy().check_setup(TINY)


def _coverage(lost_per_beta: dict[float, int], n: int = 50) -> pd.DataFrame:
    return pd.DataFrame([{"n_low_recall": 4, "beta_kd": b, "trial": t, "lost": t < lost,
                          "target_share": 0.0 if t < lost else 0.12, "log_density_at_target": -9.0}
                         for b, lost in lost_per_beta.items() for t in range(n)])


def test_too_few_lost_trials_fail_with_how_many_are_needed():
    study = CoverageStudy(min_lost=20)
    check_lost_groups(_coverage({5.0: 0, 10.0: 25, 20.0: 30}), study, 50)  # enough at every β_KD >= 10
    with pytest.raises(ValueError, match=r"β_KD = 10 with n_low_recall = 4, only 5 trials.*min_lost = 20 are needed, "
                                         r"i.e. about 200 trials at this loss rate \(5/50\)"):
        check_lost_groups(_coverage({10.0: 5, 20.0: 30}), study, 50)
    with pytest.raises(ValueError, match="none lost the target"):
        check_lost_groups(_coverage({10.0: 0}), study, 50)
    check_lost_groups(_coverage({10.0: 0}), dataclasses.replace(study, min_lost=0), 50)
    counts = lost_counts(_coverage({5.0: 1, 10.0: 25}))
    assert counts.lost.tolist() == [1, 25]
    assert trap_beta_kd(counts, 20) == 10.0 and trap_beta_kd(counts, 30) is None


def test_strata_pair_trials_and_controls_join_every_setting():
    coverage = _coverage({10.0: 2, 20.0: 3}, n=4)
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
    data = with_coverage(pd.DataFrame(rows), coverage)
    assert len(data) == 4 * 4 * 2  # 4 pipelines × 4 trials × 2 β_KD: p'_AK and control repeated per β_KD
    gaps = stratified_gaps(data, "reward").set_index(["beta_kd", "stratum", "versus"])
    # β_KD 10: trials 0, 1 lost (K-A 1) and 2, 3 kept (K-A 6)
    assert gaps.loc[(10.0, "lost", "A-K"), "diff"] == pytest.approx(7.0)
    assert gaps.loc[(10.0, "kept", "A-K"), "diff"] == pytest.approx(2.0)
    assert gaps.loc[(10.0, "all", "A-K"), "diff"] == pytest.approx(4.5)
    assert gaps.loc[(10.0, "all", ALIGNED), "diff"] == pytest.approx(9.0 - 3.5)
    assert gaps.loc[(20.0, "lost", AK_CONTROL), "n"] == 3


def test_tiny_study_runs_batched_and_reproducibly(tmp_path):
    study = CoverageStudy(beta_kds=(1.25, 20.0), algorithms=("grpo",), n_iterations=5, min_lost=0)
    store = ResultStore("test", root=tmp_path)
    results, coverage = cached_study(store, TINY, study, progress=False)
    assert set(results.pipeline) == {"K-A", "A-K", AK_CONTROL, ALIGNED}
    assert len(results) == 3 * (2 + 2 + 1 + 1)  # trials × (K-A per β_KD, A-K per β_KD, control, p'_AK)
    assert len(coverage) == 2 * 3
    again, _ = cached_study(ResultStore("test2", root=tmp_path), TINY, study, progress=False)
    pd.testing.assert_frame_equal(results.drop(columns="seconds"), again.drop(columns="seconds"))


def test_a_subset_of_trials_reproduces_those_trials_of_the_full_run():
    from alignkd.mog.pipelines import high_recall, low_recall
    from alignkd.mog.coverage_study import lost_setup

    full = high_recall(TINY)
    coverage = pd.DataFrame({"n_low_recall": 4, "beta_kd": 10.0, "trial": [0, 1, 2], "lost": [False, True, True]})
    subset = lost_setup(TINY, coverage, 10.0, 4)
    assert subset.trials == [1, 2] and subset.n_trials == 2 and subset.beta_kd == 10.0
    part = high_recall(subset)
    assert all(torch.equal(a, b) for a, b in zip(part.parameters(), full.rows([1, 2]).parameters()))
    assert torch.equal(low_recall(part, subset).means, low_recall(full, dataclasses.replace(TINY, beta_kd=10.0)).rows([1, 2]).means)
    assert lost_setup(TINY, coverage.assign(lost=False), 10.0, 4) is None
    with pytest.raises(ValueError, match=r"Setup.trial_ids = \(1, 1\): must be n_trials = 2 distinct integers"):
        Setup(n_trials=2, trial_ids=(1, 1))
