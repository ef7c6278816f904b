"""Build chapter 06's independent runs in several processes, then read them back from the cache.

Every model and evaluation of `experiments` is cached under its recipe, and `ResultStore` builds each
entry once under a file lock and writes it atomically, so several processes can fill one store. A
*cell* is one seed of one algorithm on one experiment config: its K-A and A-K alignments, A-K's final
KDs and the evaluations of all of them. Cells share nothing but cached inputs (the references, and A-K's
alignment across τ_topic), so they run side by side; afterwards `cached_run_pipelines` and `cached_coverage_sweep`
find every model in the store and only assemble tables.

    cells = [PipelineCell(config, alignment, seed, (0.95,)) for seed in seeds]
    build_cells(store, cells, jobs=2)       # the runs, in 2 processes
    cached_run_pipelines(store, refs, alignment, seeds)   # reads them

Why processes and not threads: the tiny students are bound by Python overhead, not by BLAS, so one torch
thread per process is also the cheapest setting (issue 11.9). The split changes no number: each run is
seeded by its recipe, and a worker uses one torch thread like a chapter does when the book runs one per
core (`tests/test_lm_parallel.py` compares a parallel build with an in-process one).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import torch

from ..cache import ResultStore, config_hash
from ..provenance import available_cores
from .config import LLMConfig
from .experiments import References, cached_a_k_final, cached_align, cached_evaluated, cached_references


@dataclass(frozen=True)
class PipelineCell:
    """One seed of one alignment on one experiment: K-A, A-K and A-K's final KD at each of `final_taus`
    (`ka_only`: K-A alone, e.g. a cell of the 2 × 2 of K-A references)."""

    config: LLMConfig
    alignment: Any
    seed: int
    final_taus: tuple[float, ...]
    ka_only: bool = False


_references_by_config: dict[str, References] = {}  # per process: a worker loads each config's models once


def _cached_references(store: ResultStore, config: LLMConfig) -> References:
    key = f"{store.root}:{config_hash(config)}"
    if key not in _references_by_config:
        _references_by_config[key] = cached_references(store, config, progress=False)
    return _references_by_config[key]


def build_cell(store: ResultStore, cell: PipelineCell) -> None:
    """Build (or find cached) every model and evaluation of `cell`, as `cached_run_pipelines` would."""
    refs = _cached_references(store, cell.config)
    ka = cached_align(store, refs, "p''", cell.alignment, cell.seed, progress=False)
    cached_evaluated(store, refs, ka.recipe, ka.model)
    if cell.ka_only:
        return
    ak = cached_align(store, refs, "p'", cell.alignment, cell.seed, progress=False)
    cached_evaluated(store, refs, ak.recipe, ak.model)
    for tau in cell.final_taus:
        recipe, final = cached_a_k_final(store, refs, ak, tau, cell.seed, progress=False)
        cached_evaluated(store, refs, recipe, final)


def _worker_start(threads: int) -> None:
    torch.set_num_threads(threads)


def _build_in_worker(profile: str, root: str, cell: PipelineCell) -> None:
    build_cell(ResultStore(profile, root=root), cell)


def build_cells(store: ResultStore, cells: Sequence[PipelineCell], *, jobs: int | None = None) -> None:
    """Build every cell, up to `jobs` at a time in spawned processes (default: one per core; 1: in this
    process, in order). Cells whose references are not built yet should come first in an order that
    spreads different configs over the first `jobs` cells: two cells that need the same missing model
    wait for each other on its lock. After a failure no further cell starts, and the failure is raised once
    the running cells finish. Cells on a GPU build in this process by default: one process per core would
    each load p* onto the same device and contend for it."""
    if jobs is None:
        jobs = 1 if any(cell.config.device != "cpu" for cell in cells) else available_cores()
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs = {jobs!r}: an integer >= 1")
    if jobs == 1 or len(cells) <= 1:
        for cell in cells:
            build_cell(store, cell)
        return
    workers = min(jobs, len(cells))
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")  # fork would copy this process's torch thread pools
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start, initargs=(threads,)) as pool:
        futures = [pool.submit(_build_in_worker, store.profile, str(store.root), cell) for cell in cells]
        for future in as_completed(futures):
            if future.exception() is not None:
                pool.shutdown(cancel_futures=True)  # no new cell starts; the running ones finish
                raise future.exception()


def pipeline_cells(config: LLMConfig, alignments: Mapping[str, Any], seeds: Sequence[int],
                   final_taus: Mapping[str, Sequence[float]]) -> list[PipelineCell]:
    """The cells of `cached_run_pipelines` for every alignment (by label) and seed; `final_taus[label]`: A-K's
    final-KD temperatures for that label."""
    return [PipelineCell(config, alignment, seed, tuple(final_taus[label]))
            for label, alignment in alignments.items() for seed in seeds]


def interleaved(groups: Sequence[Sequence[PipelineCell]]) -> list[PipelineCell]:
    """The cells of several groups (e.g. one per τ_topic) taken in turn, so the first cells to start need
    different references and build them side by side."""
    order = []
    for index in range(max((len(group) for group in groups), default=0)):
        order.extend(group[index] for group in groups if index < len(group))
    return order
