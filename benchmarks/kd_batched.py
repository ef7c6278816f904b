"""CPU seconds of R KD students trained one at a time (`kd.train_student`) against the same students batched
(`kd_batched.train_students`), at chapter 06's settings, and batched with the runs that early stopping ended
carried to the end (`drop_finished=False`, as before they left the stack).

    python benchmarks/kd_batched.py [--runs 6] [--samples 10000] [--profile default]

The students are chapter 06's p_target stage (`chapters.ch06_llm.config` of the profile's parameters: `low_size`,
`kd_batch`, `kd_lr`, `kd_epochs`, `kd_patience`, `kd_threshold`, `kd_validation`), seeds 0..R-1, run r on its own
sample of the synthetic language (`markov_mixture` with the chapter's vocabulary and topics, `n_low` sequences of
up to `max_new_tokens`, or `--samples` of them). Both arms run in this process with one thread (what a chapter
worker gets), one after the other; the CPU printed is this process's (`time.process_time`), with the load average:
on a shared machine compare the arms of one line only. The last columns check that the arms are the same runs:
the steps each run took (early stopping ends them apart), the largest difference of any final weight against
alone, and whether dropping finished runs left every weight bit for bit as carrying them.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--runs", type=int, default=6, help="R students (seeds 0..R-1)")
    parser.add_argument("--samples", type=int, default=0, help="sequences per student (default: the profile's n_low)")
    args = parser.parse_args()

    import torch

    from alignkd.chapters import call_with, ch06_llm, profile_values
    from alignkd.lm.groundtruth import markov_mixture
    from alignkd.lm.kd import train_student
    from alignkd.lm.kd_batched import train_students

    torch.set_num_threads(1)
    values = profile_values("06_llm", args.profile)
    n = args.samples or values["n_low"]
    config = call_with(ch06_llm.config, {**values, "n_low": n}).target.train  # held-out share follows n
    configs = [replace(config, seed=seed) for seed in range(args.runs)]
    truth = markov_mixture(vocab_size=values["vocab_size"], n_topics=values["n_topics"],
                           topic_markers=values["topic_markers"])
    datas = [truth.sample(n, values["max_new_tokens"], seed=1000 + r) for r in range(args.runs)]
    tokens = dict(vocab_size=truth.vocab_size, bos_id=truth.bos_id, eos_id=truth.eos_id, pad_id=truth.pad_id)
    print(f"R = {args.runs} '{config.size}' students, {n} sequences each ({config.validation_size} held out), batch "
          f"{config.batch_size}, lr {config.learning_rate:g}, up to {config.epochs:g} epochs, patience "
          f"{config.early_stopping_patience}, threshold {config.early_stopping_threshold:g}; 1 thread", flush=True)

    cpu = time.process_time()
    alone = [train_student(data, c, progress=False, **tokens) for data, c in zip(datas, configs)]
    alone_cpu, cpu = time.process_time() - cpu, time.process_time()
    batched = train_students(datas, configs, **tokens)
    batched_cpu, cpu = time.process_time() - cpu, time.process_time()
    carried = train_students(datas, configs, drop_finished=False, **tokens)
    carried_cpu = time.process_time() - cpu
    steps = [len(log) for _, log in alone]
    same_steps = all(len(log) == len(log_b) for (_, log), (_, log_b) in zip(alone, batched))
    gap = max(float((model.state_dict()[k] - model_b.state_dict()[k]).abs().max())
              for (model, _), (model_b, _) in zip(alone, batched) for k in model.state_dict())
    identical = all(torch.equal(value, model_c.state_dict()[k]) and log.equals(log_c)
                    for (model, log), (model_c, log_c) in zip(batched, carried) for k, value in model.state_dict().items())
    print(f"one at a time {alone_cpu:7.1f} s CPU, batched {batched_cpu:7.1f} s CPU: {alone_cpu / batched_cpu:4.2f}x; "
          f"batched carrying the finished runs {carried_cpu:7.1f} s CPU: dropping them {carried_cpu / batched_cpu:4.2f}x "
          f"(load average {os.getloadavg()[0]:.2f}); steps per run {steps} (batched the same: {same_steps}); "
          f"largest final weight difference {gap:.1e}; dropping identical to carrying: {identical}", flush=True)


if __name__ == "__main__":
    main()
