"""KTO and SimPO against chapter 05's strata (`alignkd.mog.successors`): hand-made frames with known answers.

The sentences and claim rows built on these numbers are tested with the chapters (`tests/test_chapters_ch05_ch07.py`).
"""

import math

import numpy as np
import pandas as pd
import pytest

from alignkd.cache import ResultStore
from alignkd.mog import coverage_study
from alignkd.mog.coverage_study import CoverageStudy
from alignkd.mog.pipelines import Setup
from alignkd.mog.successors import cached_coverage_results
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
    assert store.has("mog_coverage_study", coverage_study.study_key(setup, study, "simpo"))
    monkeypatch.setattr(coverage_study, "run_algorithm", lambda *a, **k: pytest.fail("must not compute"))
    results, missing = cached_coverage_results(store, setup, study, ["simpo", "dpo_online"])
    assert missing == ["dpo_online"] and set(results.algorithm) == {"simpo"} and len(results) == 4
    empty, missing = cached_coverage_results(ResultStore("other", root=tmp_path / "x"), setup, study, ["simpo"])
    assert empty.empty and missing == ["simpo"]
