"""CPU seconds of N same-shaped alignment runs made one at a time against the same runs batched (`train_*_runs`).

    python benchmarks/lm_batched.py [--runs 12] [--iterations 50] [--algorithms ppo,dpo_online,...]
    python benchmarks/lm_batched.py --chapter          # also: chapter 06 under `--profile`, where its CPU went

Chapter 06's sizes and settings (`--profile`, default "default"): each algorithm's config is the chapter's
(`chapters.ch06_llm.alignments` of the profile's parameters, `--iterations` of them), the policies are N copies
of one `low_size` student (K-A's shape) and the oracle is the synthetic language's rare topic. One at a time is
each algorithm's `train` once per seed, as a chapter made the seeds before; batched is its `train_runs` for all N
seeds at once (what `cached_run_pipelines` and the budget dose now do). Both arms run in this process with one
thread (what a worker gets), one after the other; the CPU printed is this process's (`time.process_time`), and the
load average is printed: on a shared machine compare the two arms of one line only. The last columns compare the
arms' results: the largest difference of any final weight, and in how many runs the trajectories' rewards agree to
1e-4 (they are the same runs to float32 rounding; a sampled token can differ only at a tie within rounding, after
which that run learns from other samples: `lm/batched.py`).

`--chapter` then runs `alignkd run 06 --profile <profile>` into an empty results folder and prints its wall time,
the wall and CPU seconds of each code cell (references, pipelines, dose, 2 × 2, sweep: `provenance.cell_costs`)
and the CPU seconds its builds took by kind of result (the run's own cache log: `alignkd.provenance.build_seconds`):
`lm_kd_data` is KD data, `lm_student` KD training (references, final KDs, the sweep's p''), `lm_aligned` and
`lm_budget_run` alignment, `lm_evaluation` and `lm_topic_share` evaluation.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time


def compare(args) -> None:
    import torch

    from alignkd.chapters import call_with, ch06_llm, profile_values
    from alignkd.lm.algorithms import ALGORITHMS
    from alignkd.lm.groundtruth import markov_mixture
    from alignkd.lm.reward import RewardOracle
    from alignkd.lm.students import count_parameters, make_student

    torch.set_num_threads(1)
    values = profile_values("06_llm", args.profile)
    names = args.algorithms.split(",") if args.algorithms else values["algorithms"]
    configs = call_with(ch06_llm.alignments, {**values, "algorithms": names, "iterations": args.iterations})
    truth = markov_mixture(vocab_size=values["vocab_size"], n_topics=values["n_topics"],
                           topic_markers=values["topic_markers"])
    oracle = RewardOracle.from_language_model(truth.restrict([truth.topics[-1]]))
    student = make_student(values["low_size"], values["vocab_size"], bos_id=truth.bos_id, eos_id=truth.eos_id,
                           pad_id=truth.pad_id, seed=0)
    reference = truth.wrap(student)
    seeds = list(range(args.runs))
    print(f"N = {args.runs} runs of a '{values['low_size']}' student ({count_parameters(student)} parameters, "
          f"vocab {values['vocab_size']}), {args.iterations} iterations of batch {values['batch_size']}, "
          f"max_new_tokens {values['max_new_tokens']}; the chapter's settings per algorithm; 1 thread")

    def copies(n):
        return [reference.with_model(copy.deepcopy(student).requires_grad_(True)) for _ in range(n)]

    for name in names:
        entry, config = ALGORITHMS[name], configs[name]
        frozen = reference.with_model(copy.deepcopy(student))
        cpu = time.process_time()
        alone = [(policy, entry.train(policy, frozen, oracle, config, seed=seed, progress=False))
                 for policy, seed in zip(copies(len(seeds)), seeds)]
        alone_cpu, cpu = time.process_time() - cpu, time.process_time()
        policies = copies(len(seeds))
        together = entry.train_runs(policies, frozen, oracle, config, seeds=seeds, progress=False)
        batched_cpu = time.process_time() - cpu
        gap = max(float((a.model.state_dict()[k] - b.model.state_dict()[k]).abs().max())
                  for (a, _), b in zip(alone, policies) for k in b.model.state_dict())
        agree = sum(torch.allclose(torch.tensor(r.trajectory["reward_mean"].to_numpy()),
                                   torch.tensor(a.trajectory["reward_mean"].to_numpy()), atol=1e-4)
                    for (_, a), r in zip(alone, together))
        print(f"{name:>12}: one at a time {alone_cpu:6.1f} s CPU, batched {batched_cpu:6.1f} s CPU: "
              f"{alone_cpu / batched_cpu:4.2f}x (load average {os.getloadavg()[0]:.2f}); largest final weight "
              f"difference {gap:.1e}; trajectories agree in {agree} of {len(seeds)} runs", flush=True)


def chapter(args) -> None:
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "alignkd", "run", "06", "--profile", args.profile],
                              capture_output=True, text=True, env={**os.environ, "ALIGNKD_RESULTS": results})
        wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if "CPU seconds building results" in line]
    cells = [line for line in done.stdout.splitlines() if line.startswith("  cell ")]  # per code cell
    print(f"chapter 06 under {args.profile}, empty results: {wall:,.0f} s wall (load average at the end "
          f"{os.getloadavg()[0]:.2f}); " + (lines[-1] if lines else f"no build line (exit {done.returncode})"))
    print("\n".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--runs", type=int, default=12, help="N same-shaped runs (seeds 0..N-1)")
    parser.add_argument("--iterations", type=int, default=50, help="iterations per run")
    parser.add_argument("--algorithms", default="", help="comma-separated (default: the profile's)")
    parser.add_argument("--chapter", action="store_true", help="also time chapter 06 from empty results")
    args = parser.parse_args()
    compare(args)
    if args.chapter:
        chapter(args)


if __name__ == "__main__":
    main()
