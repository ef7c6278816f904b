"""Alignment runs batched over seeds (`train_*_runs`) equal the same runs made one at a time."""

import copy
import json

import pytest
import torch

from alignkd.cache import CACHE_LOG_ENV, ResultStore
from alignkd.lm.algorithms import ALGORITHMS, alignment_config
from alignkd.lm.experiments import cached_references

from test_lm_studies import CONFIG

SEEDS = [0, 3, 5]


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    torch.set_num_threads(1)
    return cached_references(ResultStore("test", root=tmp_path_factory.mktemp("batched_align")), CONFIG,
                             progress=False)


def _copies(model, n):
    """Trainable copies (the trainers freeze the reference they are given, which is what is copied here)."""
    return [model.with_model(copy.deepcopy(model.model).requires_grad_(True)) for _ in range(n)]


TIGHT, LOOSE = dict(rtol=1e-4, atol=1e-5), dict(rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("name, fields, tolerance", [
    # four clipped Adam steps an iteration: the first step's 1e-6 of rounding grows to ~2e-4 by iteration 4, as
    # Adam's m/√v turns a rounding-sized gradient difference into a learning-rate-sized step difference
    ("ppo", dict(mini_batch_size=4, num_ppo_epochs=2, max_grad_norm=0.5), LOOSE),
    ("ppo", dict(kl_form="k3", whiten_advantages=False, mini_batch_size=8), TIGHT),
    ("grpo", dict(num_ppo_epochs=2, max_grad_norm=0.5), TIGHT),   # the clip and the ratio bind from the 2nd epoch
    ("grpo_reward", dict(scale_rewards="group"), TIGHT),
    ("dpo_online", dict(grad_steps=3, pairs_per_step=3), TIGHT),  # 4 pairs a run: mini-batches of 3, 1 (+2 padded)
    ("kto", dict(grad_steps=3, examples_per_step=3, max_grad_norm=0.5), TIGHT),
    ("simpo", dict(grad_steps=2, pairs_per_step=4), TIGHT),
])
def test_batched_runs_equal_runs_one_at_a_time(refs, name, fields, tolerance):
    entry = ALGORITHMS[name]
    config = alignment_config(name, n_iterations=4, batch_size=8, learning_rate=2e-2, max_new_tokens=6,
                              eval_every=2, device="cpu", **fields)
    reference = refs.models["p''"]
    batched = _copies(reference, len(SEEDS))
    together = entry.train_runs(batched, reference, refs.oracle, config, seeds=SEEDS, progress=False)
    for policy, seed, run in zip(batched, SEEDS, together):
        alone = _copies(reference, 1)[0]
        expected = entry.train(alone, reference, refs.oracle, config, seed=seed, progress=False)
        assert list(run.trajectory.columns) == list(expected.trajectory.columns)
        torch.testing.assert_close(torch.tensor(run.trajectory.to_numpy(float)),
                                   torch.tensor(expected.trajectory.to_numpy(float)), **tolerance)
        assert run.selected_step == expected.selected_step and list(run.checkpoints) == list(expected.checkpoints)
        final = alone.model.state_dict()
        for key, tensor in policy.model.state_dict().items():
            torch.testing.assert_close(tensor, final[key], **tolerance)
        for step, state in run.checkpoints.items():
            for key, tensor in state.items():
                torch.testing.assert_close(tensor, expected.checkpoints[step][key], **tolerance)
    # the runs differ from each other: each seed drew its own samples
    assert not torch.equal(batched[0].model.model.embed_tokens.weight, batched[1].model.model.embed_tokens.weight)


def test_pipelines_train_the_seeds_together_and_match_them_trained_alone(tmp_path, monkeypatch):
    """`cached_run_pipelines` aligns a batched algorithm's seeds as one computation (`cached_align_seeds`), then
    distils A-K's finals of those seeds as one (`cached_students_together`); a store whose runs and final KDs were
    each made alone (`cached_align`, `cached_a_k_final`) gives the same table to float32 rounding."""
    from alignkd.lm.experiments import cached_a_k_final, cached_align, cached_run_pipelines

    config = alignment_config("grpo", n_iterations=3, batch_size=8, learning_rate=2e-2, max_new_tokens=6,
                              eval_every=1, device="cpu")
    tables = {}
    for way in ("together", "alone"):
        store = ResultStore("test", root=tmp_path / way)
        refs = cached_references(store, CONFIG, progress=False)
        if way == "alone":
            for seed in (0, 1):
                cached_align(store, refs, "p''", config, seed, progress=False)
                ak = cached_align(store, refs, "p'", config, seed, progress=False)
                cached_a_k_final(store, refs, ak, 0.95, seed, progress=False)
        else:  # the cache log says what was computed for several results at once
            monkeypatch.setenv(CACHE_LOG_ENV, str(tmp_path / "cache.jsonl"))
        tables[way] = cached_run_pipelines(store, refs, config, [0, 1], final_taus=[0.95], progress=False).metrics
        monkeypatch.delenv(CACHE_LOG_ENV, raising=False)
    entries = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert {e["result"] for e in entries if e.get("charged")} == {"lm_aligned", "lm_student"}
    together, alone = tables["together"], tables["alone"]
    assert list(together.columns) == list(alone.columns) and len(together) == len(alone) == 4 + 2 * 3
    numbers = together.select_dtypes("number").columns
    torch.testing.assert_close(torch.tensor(together[numbers].to_numpy(float)),
                               torch.tensor(alone[numbers].to_numpy(float)), rtol=1e-4, atol=1e-5, equal_nan=True)


def test_every_algorithm_that_trains_seeds_together_has_a_case_above():
    marks = test_batched_runs_equal_runs_one_at_a_time.pytestmark
    tested = {case[0] for mark in marks if mark.name == "parametrize" for case in mark.args[1]}
    batched = {name for name, entry in ALGORITHMS.items() if entry.train_runs is not None}
    assert batched == tested, f"train_runs without an equality case: {sorted(batched - tested)}"
