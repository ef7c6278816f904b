"""MoG speed: batched engine vs a loop over trials, and the wall time of the MoG chapters.

    python benchmarks/mog_speed.py                 # both measurements
    python benchmarks/mog_speed.py --ratio-only    # only the batched-vs-loop ratio

1. One sweep (PPO, Pipeline K-A, 4 β × 20 trials, `--iterations` steps, default 400: the `default`
   profile's budget) trained once as a batch of 80 rows and once as a Python loop over the 80 (β, trial)
   rows with the same code; prints both wall and CPU times (one thread: the CPU ratio is what an idle
   machine shows, the wall ratio moves with the load of a shared one), the ratios (goal ≥ 20×) and the
   largest parameter difference between the two.
2. The MoG part of the `default` book (chapters 02, 03, 04, 05 and chapter 07's MoG section, i.e. 07 with
   `lm_section=False`) executed into an empty results folder (or `--results DIR`) exactly as `make book` executes
   them: `alignkd.book.execute_profile` with `--jobs` chapters at once (default: one per core), each one thread,
   in the order their `after:` front matter allows. Prints each chapter's time, the wall time of the whole part
   (goal <= 480 s on 2 CPU cores) and its CPU time (user + system of the whole process tree, kernels included,
   read from /proc while it runs). The load average is printed before and after: on a shared machine wall
   time overstates the cost.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from alignkd.mog import ppo
from alignkd.mog.mixture import Mixture
from alignkd.mog.sft import SFTConfig, fit_p_star

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["02_mog_setup", "03_mog_alignment", "04_mog_multi_target", "05_mog_coverage", "07_pad"]
OVERRIDES = {"07_pad": {"lm_section": False}}  # chapter 07's MoG section only


def ratio(iterations: int) -> None:
    torch.set_num_threads(1)
    trials, betas = list(range(20)), [0.1, 0.5, 1.0, 2.0]
    start = fit_p_star(SFTConfig(n_components=4, n_iterations=200), seed=0, trials=trials)
    rows = start.repeat(len(betas))
    row_betas = torch.tensor(betas).repeat_interleave(len(trials))
    config = ppo.PPOConfig(n_iterations=iterations)
    t0, c0 = time.perf_counter(), time.process_time()
    batched = ppo.train(rows, rows, config, 0, trials, betas=row_betas)[iterations]
    t_batched, c_batched = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    lone = []
    for s, beta in enumerate(betas):
        for t in trials:
            one = start.rows([t])
            lone.append(ppo.train(one, one, config, 0, [t], betas=[beta])[iterations])
    t_loop, c_loop = time.perf_counter() - t0, time.process_time() - c0
    looped = Mixture.cat(lone)
    diff = max((a - b).abs().max().item() for a, b in zip(batched.parameters(), looped.parameters()))
    print(f"one sweep, PPO K-A, {len(betas)} β × {len(trials)} trials × {iterations} iterations:")
    print(f"  load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs")
    print(f"  wall: batched {t_batched:.2f} s, loop over the {rows.n_rows} rows {t_loop:.2f} s, ratio "
          f"{t_loop / t_batched:.1f}× (load-sensitive on a shared machine)")
    print(f"  CPU:  batched {c_batched:.2f} s, loop {c_loop:.2f} s, ratio {c_loop / c_batched:.1f}× (goal >= 20×; one "
          f"thread, so this is the idle-machine ratio)   max |batched − loop| = {diff:.2e}")


def _tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of `root` and every live descendant, by pid, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return {pid: cpu[pid] for pid in tree if pid in cpu}


def _run_measured(command: list[str], env: dict, log: Path) -> tuple[float, float]:
    """Run `command` (its output to `log`); return its wall time and the CPU time of its process tree (polled every
    0.5 s, so a process that lives less than that may be missed: the chapters' kernels live for the whole chapter)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        seen: dict[int, float] = {}
        while process.poll() is None:
            seen.update(_tree_cpu(process.pid))
            time.sleep(0.5)
    if process.returncode:
        print(log.read_text())
        raise subprocess.CalledProcessError(process.returncode, command)
    return time.perf_counter() - t0, sum(seen.values())


def chapters(results: str | None, jobs: int | None) -> None:
    print(f"load average before the chapters: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "ALIGNKD_RESULTS": results or scratch, "TQDM_DISABLE": "1"}
        run = (f"from pathlib import Path; from alignkd.book import execute_profile; "
               f"execute_profile('default', only={CHAPTERS!r}, overrides={OVERRIDES!r}, force=True, "
               f"book_root=Path({scratch!r}), jobs={jobs!r})")
        log = Path(scratch) / "book.log"
        wall, cpu = _run_measured([sys.executable, "-c", run], env, log)
        for line in log.read_text().splitlines():
            if "done in" in line:
                print("  " + line, flush=True)
    print(f"MoG part of the default book (02-05, 07's MoG section), empty cache, {jobs or os.cpu_count()} chapters at "
          f"once: wall {wall:.0f} s (goal <= 480 s on 2 CPU cores), CPU {cpu:.0f} s; load average now "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio-only", action="store_true")
    parser.add_argument("--iterations", type=int, default=400, help="PPO iterations (default: the default profile's)")
    parser.add_argument("--chapters-only", action="store_true")
    parser.add_argument("--results", help="results folder to fill (default: a temporary, empty one)")
    parser.add_argument("--jobs", type=int, help="chapters executed at once (default: one per core, as `make book`)")
    args = parser.parse_args()
    if not args.chapters_only:
        ratio(args.iterations)
    if not args.ratio_only:
        chapters(args.results, args.jobs)
