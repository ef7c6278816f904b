"""`alignkd.lm.parallel` through `cached_run_pipelines(..., jobs=)`: runs built in worker processes are the runs built
in-process, bit for bit, and the pipelines read them back instead of training again."""

import json
import os
import signal

from pathlib import Path

import pandas as pd
import pytest
import torch

from alignkd.cache import CACHE_LOG_ENV, ResultStore
from alignkd.lm.algorithms import alignment_config
from alignkd.lm.experiments import (PipelineCell, PipelineResult, cached_cells, cached_pipelines, cached_references,
                                   cached_run_pipelines)
from alignkd.lm.parallel import in_workers, interleaved, resolve_jobs, started
from tests.test_lm_studies import CONFIG, PPO

DPO = alignment_config("dpo_online", n_iterations=2, batch_size=8, grad_steps=1, pairs_per_step=2, learning_rate=1e-3,
                       max_new_tokens=6, eval_every=1, device="cpu")
GRPO = alignment_config("grpo_reward", n_iterations=2, batch_size=8, learning_rate=1e-2, max_new_tokens=6, eval_every=1,
                        device="cpu")  # its seeds train as one computation: a group per pipeline, in a worker each
ALIGNMENTS = {"ppo": PPO, "dpo_online": DPO, "grpo_reward": GRPO}
TAUS = {"ppo": [0.95, 0.9], "dpo_online": [0.95], "grpo_reward": [0.95]}


def built(root, jobs):
    """jobs > 1: every algorithm at once (`cached_pipelines`), as chapter 06 builds them; 1: one at a time."""
    torch.set_num_threads(1)  # what a worker gets: one torch thread
    store = ResultStore("test", root=root)
    refs = cached_references(store, CONFIG, progress=False)
    if jobs > 1:
        both = cached_pipelines(store, refs, ALIGNMENTS, [0, 1], final_taus=TAUS, progress=False, jobs=jobs)
        results = {label: PipelineResult(both.metrics[both.metrics["algorithm"] == label].reset_index(drop=True),
                                         both.trajectories[both.trajectories["algorithm"] == label]
                                         .reset_index(drop=True)) for label in ALIGNMENTS}
    else:
        results = {label: cached_run_pipelines(store, refs, alignment, [0, 1], label=label, final_taus=TAUS[label],
                                               progress=False, jobs=jobs)
                   for label, alignment in ALIGNMENTS.items()}
    return store, refs, results


def test_pipelines_built_in_workers_equal_pipelines_built_in_process(tmp_path, monkeypatch):
    log = tmp_path / "cache.jsonl"
    monkeypatch.setenv(CACHE_LOG_ENV, str(log))  # spawned workers inherit it
    parallel, _, in_workers = built(tmp_path / "parallel", jobs=2)
    built_results = [json.loads(line)["result"] for line in log.read_text().splitlines()
                     if not json.loads(line)["reused"]]
    first_table = built_results.index("lm_pipeline_metrics")  # every algorithm's models come before any table
    assert {"lm_aligned", "lm_student"} <= set(built_results[:first_table])
    assert not {"lm_aligned", "lm_student"} & set(built_results[first_table:])
    monkeypatch.delenv(CACHE_LOG_ENV)
    serial, _, in_process = built(tmp_path / "serial", jobs=1)
    aligned = lambda store: sorted(p.name for p in (store.root / "lm_aligned").glob("*[!k]"))  # noqa: E731
    assert len(aligned(parallel)) == 3 * 2 * 2  # algorithms × seeds × (K-A, A-K)
    assert aligned(parallel) == aligned(serial)  # the same recipes, so the same cache keys
    for label in ALIGNMENTS:
        a, b = in_workers[label], in_process[label]
        assert a.metrics.equals(b.metrics), label
        extra = a.trajectories.columns.difference(b.trajectories.columns)  # other algorithms' columns, concatenated
        assert a.trajectories[extra].isna().all().all(), label
        # a column missing from another algorithm's rows turns from int to float in the concatenation
        pd.testing.assert_frame_equal(a.trajectories[b.trajectories.columns], b.trajectories, check_dtype=False)
        assert len(a.metrics[a.metrics["model"] == "p''_AK"]) == 2 * len(TAUS[label])


def test_interleaved_takes_groups_in_turn():
    cells = [[PipelineCell(CONFIG, PPO, seed, (0.95,)) for seed in range(n)] for n in (3, 1, 2)]
    assert [cell.seed for cell in interleaved(cells)] == [0, 0, 0, 1, 1, 2]
    assert interleaved([]) == []


def test_a_failing_cell_is_raised_and_jobs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="jobs"):
        resolve_jobs(0, ["cpu"])
    assert resolve_jobs(None, ["cuda"]) == 1  # one process per GPU: workers would contend for the device
    store = ResultStore("test", root=tmp_path)
    broken = PipelineCell(CONFIG, object(), 0, (0.95,))  # no algorithm has this config
    with pytest.raises(Exception, match="not an LM alignment config"):
        cached_cells(store, [broken, broken], jobs=2)


def test_grid_and_sweep_built_in_workers_equal_in_process(tmp_path):
    from alignkd.lm.premise import PremiseRule
    from alignkd.lm.studies import cached_capacity_grid, cached_coverage_sweep

    frames = {}
    for jobs in (2, 1):
        store, refs, _ = built(tmp_path / f"jobs{jobs}", jobs=jobs)
        grid = cached_capacity_grid(store, refs, PPO, [0, 1], label="ppo", sizes=["tiny"], progress=False, jobs=jobs)
        sweep = cached_coverage_sweep(store, CONFIG, {"ppo": PPO}, [0, 1], tau_topics=[0.5, 0.8], progress=False,
                               rule=PremiseRule(n_samples=10000, max_new_tokens=6), jobs=jobs)
        frames[jobs] = grid, sweep
    assert frames[2][0].equals(frames[1][0])
    assert frames[2][1].equals(frames[1][1])
    assert set(frames[2][1]["tau_topic"]) == {0.5, 0.8}


def _write_pid(folder: str, n: int) -> None:
    (Path(folder) / f"{n}.{os.getpid()}").touch()


def _pid_and_square(x: int) -> tuple[int, int]:
    if x < 0:
        raise ValueError(f"x = {x}: a test failure")
    return os.getpid(), x * x


def test_workers_stay_for_the_next_call_until_the_environment_changes(tmp_path, monkeypatch):
    def pids(name):
        folder = tmp_path / name
        folder.mkdir()
        in_workers(_write_pid, [(str(folder), n) for n in range(6)], jobs=2)
        assert len(list(folder.iterdir())) == 6
        return {int(p.suffix[1:]) for p in folder.iterdir()}

    first, second = pids("a"), pids("b")
    assert len(first | second) <= 2 and os.getpid() not in first  # the same two workers, not this process
    monkeypatch.setenv("ALIGNKD_TEST_POOL", "changed")  # a worker reads the environment when it starts
    assert not pids("c") & (first | second)


def _ctrl_c_raises_here() -> bool:
    return signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_kept_worker_ignores_ctrl_c_while_idle_and_not_while_it_works(tmp_path):
    """A Jupyter kernel that shuts down sends SIGINT to its children: each idle kept worker printed a
    KeyboardInterrupt traceback into the book's log. While a task runs, Ctrl-C still interrupts it."""
    in_workers(_write_pid, [(str(tmp_path), n) for n in range(4)], jobs=2)
    for pid in {int(p.suffix[1:]) for p in tmp_path.iterdir()}:  # workers that ran a task: started and now idle
        ignored = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("SigIgn:")).split()[1], 16)
        assert ignored & (1 << (signal.SIGINT - 1)), pid
    assert started(_ctrl_c_raises_here, (), jobs=2)()


def test_started_runs_beside_the_caller_or_here_and_raises_its_failure():
    collect = started(_pid_and_square, (7,), jobs=2)
    pid, value = collect()
    assert value == 49 and pid != os.getpid()
    assert started(_pid_and_square, (7,), jobs=1)() == (os.getpid(), 49)  # jobs 1: run here, when collected
    with pytest.raises(ValueError, match="a test failure"):
        started(_pid_and_square, (-1,), jobs=2)()
