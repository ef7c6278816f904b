"""Wall time and CPU of chapter 06's K-A / A-K runs built in one process against `--jobs` processes.

    python benchmarks/lm_parallel.py [--algorithms ppo grpo] [--seeds 0 1 2] [--jobs 2] [--profile default]

The cells are the chapter's own (`params/<profile>.yaml`, `alignkd.lm.config`): for each algorithm and
seed, K-A, A-K, A-K's final KD at the main temperature and the evaluations of all three. The references
(p', p'') are built first into a base store and are not timed; each build then starts from a copy of that
base, so both build exactly the same runs from the same cached references. `cached_run_pipelines(..., jobs=)`
builds each algorithm's seeds side by side (`alignkd.lm.parallel`); it does not make a run cheaper, so the
printed CPU (this process and its workers, `getrusage`) shows what the extra processes cost and the wall ratio what they buy. Both builds end with the
same models (checked here on the evaluations), as `tests/test_lm_parallel.py` checks on a tiny case. The
load average is printed: compare the two walls of one run only, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--algorithms", nargs="+", default=["ppo", "grpo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per core)")
    args = parser.parse_args()
    from alignkd.provenance import available_cores

    args.jobs = args.jobs or available_cores()

    import pandas as pd
    import torch

    from alignkd.cache import ResultStore
    from alignkd.chapters import call_with, ch06_llm, profile_values
    from alignkd.lm.experiments import cached_references, cached_run_pipelines

    torch.set_num_threads(1)  # what a chapter gets when the book runs one per core
    params = {**profile_values("06_llm", args.profile), "algorithms": args.algorithms}
    config, alignments = call_with(ch06_llm.config, params), call_with(ch06_llm.alignments, params)
    final = {label: config.final_taus[:1] for label in alignments}
    with tempfile.TemporaryDirectory() as tmp:
        base = ResultStore(args.profile, root=Path(tmp) / "base")
        start = time.perf_counter()
        cached_references(base, config, progress=False)
        print(f"references built in {time.perf_counter() - start:.1f} s (not timed below)")
        measured, tables = {}, {}
        for jobs in (1, args.jobs):
            root = Path(tmp) / f"jobs{jobs}"
            shutil.copytree(base.root, root)
            store = ResultStore(args.profile, root=root)
            refs = cached_references(store, config, progress=False)
            cpu, wall = cpu_seconds(), time.perf_counter()
            tables[jobs] = pd.concat([cached_run_pipelines(store, refs, alignment, args.seeds, label=label,
                                                           final_taus=list(final[label]), progress=False,
                                                           jobs=jobs).metrics
                                      for label, alignment in alignments.items()], ignore_index=True)
            measured[jobs] = (time.perf_counter() - wall, cpu_seconds() - cpu)
            print(f"jobs = {jobs}: {len(alignments) * len(args.seeds)} cells in {measured[jobs][0]:.1f} s wall, "
                  f"{measured[jobs][1]:.1f} s CPU (load average {os.getloadavg()[0]:.2f})")
    (wall_1, cpu_1), (wall_n, cpu_n) = measured[1], measured[args.jobs]
    print(f"wall ratio 1 / {args.jobs} jobs: {wall_1 / wall_n:.2f}x; CPU ratio {cpu_n / cpu_1:.2f}x; "
          f"same models: {tables[1].equals(tables[args.jobs])}")


if __name__ == "__main__":
    main()
