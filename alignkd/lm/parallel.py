"""Run independent tasks in spawned worker processes, one torch thread each.

Every model and evaluation of `experiments` is cached under its recipe, and `ResultStore` builds each
entry once under a file lock and writes it atomically, so several processes can fill one store.
`experiments.cached_cells` hands this module the cells of `cached_run_pipelines` (and of the studies built on
it) to build side by side; the caller then reads every model back from the store.

Why processes and not threads: the tiny students are bound by Python overhead, not by BLAS, so one torch
thread per process is also the cheapest setting (issue 11.9). The split changes no number: each run is
seeded by its recipe, and a worker uses one torch thread like a chapter does when the book runs one per
core (`tests/test_lm_parallel.py` compares a parallel build with an in-process one).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import torch

from ..provenance import available_cores

T = TypeVar("T")


def resolve_jobs(jobs: int | None, devices: Sequence[str]) -> int:
    """The worker count `jobs` asks for (None: one per core). Work on a GPU runs in this process by default:
    one process per core would each load p* onto the same device and contend for it."""
    if jobs is None:
        jobs = 1 if any(device != "cpu" for device in devices) else available_cores()
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs = {jobs!r}: an integer >= 1 (or None: one per core)")
    return jobs


def _worker_start(threads: int) -> None:
    torch.set_num_threads(threads)
    # idle, a kept worker ignores Ctrl-C: a Jupyter kernel that shuts down sends SIGINT to its children before
    # SIGTERM, and each idle worker printed a KeyboardInterrupt traceback into the book's log
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interruptible(task: Callable[..., T], *arguments) -> T:
    """`task(*arguments)` with Ctrl-C raising KeyboardInterrupt inside it, as in the caller."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return task(*arguments)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


_POOLS: dict[tuple, ProcessPoolExecutor] = {}
"""This process's worker pools by (workers, torch threads each, environment), kept between calls: a spawned worker
spends 5-9 CPU s importing the library, and chapter 06 asks for workers about ten times (ten pools of two were 21
processes). A worker reads the environment once, when it starts (the result store's cache log, say), so a pool is
kept only while the environment it started in is this process's. A task leaves nothing a later one reads: each
run is seeded by its recipe and returns nothing."""


@atexit.register
def _shut_down_pools() -> None:
    """Pools dropped while the interpreter still has its modules: left to its teardown, each printed an
    `Exception ignored in ... weakref_cb` from concurrent.futures."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True)


def _pool(workers: int, threads: int) -> ProcessPoolExecutor:
    environment = hash(frozenset(os.environ.items()))
    for key in [key for key in _POOLS if key[2] != environment]:
        _POOLS.pop(key).shutdown(wait=False)
    key = (workers, threads, environment)
    if key not in _POOLS:
        _POOLS[key] = _spawned(workers, threads)
    return _POOLS[key]


def _spawned(workers: int, threads: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")  # fork would copy this process's torch thread pools
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start, initargs=(threads,))


def in_workers(task: Callable[..., Any], arguments: Sequence[tuple], *, jobs: int) -> None:
    """Call `task(*a)` for every `a` of `arguments`, up to `jobs` at a time in spawned processes (`task` and its
    arguments must pickle), which stay for this process's next call. After a failure no further call of this
    batch starts, and the failure is raised once the running calls finish."""
    workers = min(jobs, len(arguments))
    threads = max(1, torch.get_num_threads() // workers)
    pool = _pool(workers, threads)
    futures = []
    try:
        for a in arguments:
            futures.append(pool.submit(_interruptible, task, *a))
        for future in as_completed(futures):
            if future.exception() is not None:
                for other in futures:
                    other.cancel()  # no new call starts; the running ones finish
                for other in futures:
                    if not other.cancelled():
                        other.exception()  # waits
                raise future.exception()
    except BrokenProcessPool:  # a worker died: the next call starts a fresh pool
        for key in [key for key, value in _POOLS.items() if value is pool]:
            del _POOLS[key]
        raise
    except KeyboardInterrupt:  # none of this batch starts after Ctrl-C (the running calls got it too)
        for future in futures:
            future.cancel()
        raise


def started(task: Callable[..., T], arguments: tuple, *, jobs: int) -> Callable[[], T]:
    """`task(*arguments)` begun now in a spawned process of its own when `jobs` > 1, so that the caller goes on
    with other work; else not begun. Returns the call that gives its result: it waits for the process (raising
    its failure), or runs `task` here when nothing was begun."""
    if jobs <= 1:
        return lambda: task(*arguments)
    pool = _spawned(1, 1)
    future = pool.submit(_interruptible, task, *arguments)
    pool.shutdown(wait=False)  # the process ends once its one task does
    return future.result


def in_turn(task: Callable[..., Any], arguments: Sequence[tuple], jobs: int) -> None:
    """`task(*a)` for every `a`: in `jobs` worker processes (`in_workers`) when both are more than one, else here."""
    if jobs > 1 and len(arguments) > 1:
        in_workers(task, arguments, jobs=jobs)
    else:
        for args in arguments:
            task(*args)


def interleaved(groups: Sequence[Sequence[T]]) -> list[T]:
    """The items of several groups (e.g. cells, one group per τ_topic) taken in turn, so the first cells to start
    need different references and build them side by side."""
    order = []
    for index in range(max((len(group) for group in groups), default=0)):
        order.extend(group[index] for group in groups if index < len(group))
    return order
