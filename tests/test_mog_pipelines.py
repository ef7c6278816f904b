"""Pipelines and the cache on tiny runs."""

import pandas as pd
import pytest
import torch

from alignkd.cache import ResultStore
from alignkd.mog.experiments import cached_high_recall, cached_sweep
from alignkd.mog.mixture import Mixture
from alignkd.mog.pipelines import Setup, Sweep, high_recall, low_recall, run_sweep

TINY = Setup(n_trials=2, seed=1, sft_iterations=60, kd_iterations=40, eval_samples=500)
SWEEP = Sweep(algorithm="grpo", betas=(0.5, 1.0), checkpoints=(5, 10), iteration_beta=1.0)


@pytest.fixture(scope="module")
def models():
    p_high = high_recall(TINY)
    return p_high, low_recall(p_high, TINY)


@pytest.fixture(scope="module")
def results(models):
    return run_sweep(SWEEP, TINY, *models)


def test_sweep_table_has_every_setting_trial_and_pipeline(results):
    assert set(results.pipeline) == {"K-A", "A-K", "A (p'_AK)"}
    ka_beta = results[(results.pipeline == "K-A") & (results.panel == "beta")]
    assert sorted(ka_beta.beta.unique()) == [0.5, 1.0] and set(ka_beta.iterations) == {10}
    ka_it = results[(results.pipeline == "K-A") & (results.panel == "iterations")]
    assert sorted(ka_it.iterations.unique()) == [5, 10] and set(ka_it.beta) == {1.0}
    assert len(results) == 2 * (2 + 2) * 2 + 2 * 2  # (K-A, A-K) × (2 β + 2 checkpoints) × 2 trials + p'_AK
    # panel (b)'s last checkpoint is the same model as panel (a)'s β = 1 row, scored on the same stream
    for pipeline in ("K-A", "A-K"):
        a = results[(results.pipeline == pipeline) & (results.panel == "beta") & (results.beta == 1.0)]
        b = results[(results.pipeline == pipeline) & (results.panel == "iterations") & (results.iterations == 10)]
        assert a.reward.tolist() == b.reward.tolist()


def test_low_recall_model_has_fewer_components(models):
    p_high, p_low = models
    assert (p_high.n_components, p_low.n_components) == (6, 4)
    assert torch.isfinite(p_low.log_prob(torch.randn(2, 10, 2))).all()


def test_cache_returns_identical_numbers_without_recomputing(tmp_path, monkeypatch):
    store = ResultStore("test", root=tmp_path)
    first = cached_sweep(store, TINY, SWEEP, progress=False)
    import alignkd.mog.experiments as experiments
    monkeypatch.setattr(experiments, "run_sweep", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = cached_sweep(store, TINY, SWEEP, progress=False)
    pd.testing.assert_frame_equal(first, again)
    p_high = cached_high_recall(store, TINY, progress=False)
    assert isinstance(p_high, Mixture) and p_high.n_rows == TINY.n_trials


def test_same_seed_same_numbers_different_seed_different(models, results):
    again = run_sweep(SWEEP, TINY, *models)
    pd.testing.assert_frame_equal(results, again)
    other = run_sweep(SWEEP, Setup(**{**TINY.__dict__, "seed": 2}), *models)
    assert not results.reward.equals(other.reward)


def test_invalid_sweeps_fail_before_compute():
    with pytest.raises(ValueError, match="checkpoints"):
        Sweep(checkpoints=())
    with pytest.raises(ValueError, match="beta"):
        Sweep(iteration_beta=0.0)
    with pytest.raises(ValueError, match="n_trials"):
        Setup(n_trials=0)
