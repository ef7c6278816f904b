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


# lr 5e-3, not 2e-2: Adam's m/√v turns a rounding-sized gradient difference into a learning-rate-sized step
# difference, so at 2e-2 the first step's 1e-6 of rounding grew past 2e-3 by iteration 4 (PPO, four clipped steps
# an iteration) and KTO's trajectory past 1e-4 on an AMD EPYC (AVX2, no AVX-512), whose kernels round otherwise
# than those of the machines this test had passed on. At 5e-3 every case there holds to a quarter of TIGHT.
@pytest.mark.parametrize("name, fields, tolerance", [
    ("ppo", dict(mini_batch_size=4, num_ppo_epochs=2, max_grad_norm=0.5), TIGHT),
    ("ppo", dict(kl_form="k3", whiten_advantages=False, mini_batch_size=8), TIGHT),
    ("grpo", dict(num_ppo_epochs=2, max_grad_norm=0.5), TIGHT),   # the ratio leaves 1 from the 2nd epoch
    ("grpo_reward", dict(scale_rewards="group"), TIGHT),
    ("dpo_online", dict(grad_steps=3, pairs_per_step=3), TIGHT),  # 4 pairs a run: mini-batches of 3, 1 (+2 padded)
    ("kto", dict(grad_steps=3, examples_per_step=3, max_grad_norm=0.5), TIGHT),
    ("simpo", dict(grad_steps=2, pairs_per_step=4), TIGHT),
])
def test_batched_runs_equal_runs_one_at_a_time(refs, name, fields, tolerance):
    entry = ALGORITHMS[name]
    config = alignment_config(name, n_iterations=4, batch_size=8, learning_rate=5e-3, max_new_tokens=6,
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


@pytest.mark.parametrize("name", [name for name, entry in ALGORITHMS.items() if entry.train_runs is not None])
def test_batched_runs_each_anchored_to_its_own_reference(refs, name):
    """Runs of one shape from and against different references (a coverage sweep's K-A references, the 2 × 2's
    cells) as one computation: run r equals the run alone from and against its own reference."""
    # what a batch of 8 holds, in 2 gradient steps: 16 steps of lr 2e-2 on 4 pairs blow float32 rounding up
    fields = {"dpo_online": dict(pairs_per_step=4, grad_steps=2), "simpo": dict(pairs_per_step=4, grad_steps=2),
              "kto": dict(examples_per_step=8, grad_steps=2)}.get(name, {})
    # lr 5e-3: the stacked references score with other kernels than transformers (rounding apart), and a larger
    # step turns that into more than float32 rounding by the third iteration
    config = alignment_config(name, n_iterations=3, batch_size=8, learning_rate=5e-3, max_new_tokens=6,
                              eval_every=3, device="cpu", **fields)
    entry, tolerance = ALGORITHMS[name], LOOSE if name == "ppo" else TIGHT
    references = [refs.models["p''"], refs.models["p'"], refs.models["p''"]]
    batched = [_copies(reference, 1)[0] for reference in references]
    together = entry.train_runs(batched, references, refs.oracle, config, seeds=SEEDS, progress=False)
    for policy, reference, seed, run in zip(batched, references, SEEDS, together):
        alone = _copies(reference, 1)[0]
        expected = entry.train(alone, reference, refs.oracle, config, seed=seed, progress=False)
        torch.testing.assert_close(torch.tensor(run.trajectory.to_numpy(float)),
                                   torch.tensor(expected.trajectory.to_numpy(float)), equal_nan=True, **tolerance)
        final = alone.model.state_dict()
        for key, tensor in policy.model.state_dict().items():
            torch.testing.assert_close(tensor, final[key], **tolerance)
    if name != "simpo":  # the reference is in the loss: against p'' instead of p', run 1 would differ
        wrong = _copies(refs.models["p'"], 1)[0]
        entry.train(wrong, refs.models["p''"], refs.oracle, config, seed=SEEDS[1], progress=False)
        assert not torch.allclose(wrong.model.model.embed_tokens.weight, batched[1].model.model.embed_tokens.weight,
                                  **tolerance)


def test_runs_take_one_reference_or_one_per_run(refs):
    from alignkd.lm.training import RunReferences

    with pytest.raises(ValueError, match="2 references for 3 runs"):
        RunReferences([refs.models["p''"], refs.models["p'"]], 3, "cpu")
    assert RunReferences([refs.models["p''"]] * 3, 3, "cpu").stacked is None  # one model shared: scored once


def test_pipelines_train_the_seeds_together_and_match_them_trained_alone(tmp_path, monkeypatch):
    """`cached_run_pipelines` aligns a batched algorithm's seeds as one computation (`cached_align_runs`), then
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


def _swept(tau_topics, size=None):
    """CONFIG with p'' distilled at each τ_topic (the coverage sweep's K-A references), of another size if given."""
    import dataclasses

    from alignkd.lm.config import StageConfig

    low = CONFIG.low_recall
    train = dataclasses.replace(low.train, size=size) if size else low.train
    return [dataclasses.replace(CONFIG, low_recall=StageConfig(dataclasses.replace(low.data, tau_topic=tau_topic),
                                                               train)) for tau_topic in tau_topics]


def test_run_groups_put_the_references_of_one_shape_together():
    from alignkd.lm.experiments import PipelineCell, run_groups

    grpo = alignment_config("grpo", n_iterations=2, batch_size=8, learning_rate=2e-2, max_new_tokens=6,
                            eval_every=1, device="cpu")
    cells = [PipelineCell(config, grpo, seed, (0.95,)) for config in _swept([0.5, 1.0]) for seed in (0, 1)]
    groups = run_groups(cells)
    # K-A: two references × two seeds as one computation; A-K: p' is one model under both τ_topic, once per seed
    assert sorted((len(g.members), {name for _, name, _ in g.members}.pop()) for g in groups) == [(2, "p'"), (4, "p''")]
    # another student size is another shape, hence another group; an algorithm of its own, another group
    other = [PipelineCell(config, grpo, seed, (), ka_only=True) for config in _swept([0.5, 1.0], "small")
             for seed in (0, 1)]
    dpo = alignment_config("dpo_online", n_iterations=2, batch_size=8, pairs_per_step=4, learning_rate=2e-2,
                           max_new_tokens=6, eval_every=1, device="cpu")
    sizes = sorted(len(g.members) for g in run_groups(cells + other + [PipelineCell(CONFIG, dpo, 0, (), True),
                                                                          PipelineCell(CONFIG, dpo, 1, (), True)]))
    assert sizes == [2, 2, 4, 4]


def test_a_sweep_aligned_across_references_matches_each_run_aligned_alone(tmp_path, monkeypatch):
    """`cached_cells` aligns the K-A runs of two τ_topic references as one computation (`run_groups`,
    `cached_align_runs`); each stored run equals the run made alone from and against its own reference."""
    from alignkd.lm.experiments import PipelineCell, cached_align, cached_cells

    config = alignment_config("kto", n_iterations=2, batch_size=8, examples_per_step=8, grad_steps=2,
                              learning_rate=5e-3, max_new_tokens=6, eval_every=1, device="cpu")
    swept = _swept([0.5, 1.0])
    together, alone = ResultStore("test", root=tmp_path / "together"), ResultStore("test", root=tmp_path / "alone")
    monkeypatch.setenv(CACHE_LOG_ENV, str(tmp_path / "cache.jsonl"))
    cached_cells(together, [PipelineCell(c, config, seed, (), ka_only=True) for c in swept for seed in (0, 1)])
    monkeypatch.delenv(CACHE_LOG_ENV)
    entries = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert [e["result"] for e in entries if e.get("charged")] == ["lm_aligned"]  # one computation for the four
    for c in swept:
        for seed in (0, 1):
            read = cached_align(together, cached_references(together, c, progress=False), "p''", config, seed,
                                progress=False)
            made = cached_align(alone, cached_references(alone, c, progress=False), "p''", config, seed,
                                progress=False)
            torch.testing.assert_close(torch.tensor(read.trajectory.to_numpy(float)),
                                       torch.tensor(made.trajectory.to_numpy(float)), rtol=1e-4, atol=1e-5,
                                       equal_nan=True)
            expected = made.model.model.state_dict()
            for key, tensor in read.model.model.state_dict().items():
                torch.testing.assert_close(tensor, expected[key], rtol=1e-4, atol=1e-5)


def test_every_algorithm_that_trains_seeds_together_has_a_case_above():
    marks = test_batched_runs_equal_runs_one_at_a_time.pytestmark
    tested = {case[0] for mark in marks if mark.name == "parametrize" for case in mark.args[1]}
    batched = {name for name, entry in ALGORITHMS.items() if entry.train_runs is not None}
    assert batched == tested, f"train_runs without an equality case: {sorted(batched - tested)}"
