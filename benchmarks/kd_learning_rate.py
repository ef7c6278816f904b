"""What chapter 06's KD learning rate costs and buys: epochs to early stopping, CPU seconds and the held-out loss
a student ends at, per learning rate, for the two student shapes of the chapter.

    python benchmarks/kd_learning_rate.py [--profile default] [--lrs 0.002 0.01]

The students are chapter 06's p' stage (`high_size` on `n_high` sequences) and p_target stage (`low_size` on
`n_low`; p'', p_target and every A-K final KD have that shape and size), built by `chapters.ch06_llm.config` from
the profile's parameters with only `kd_lr` replaced, each trained by `kd.train_student` on its own sample of the
synthetic language (`markov_mixture` with the chapter's vocabulary and topics). Early stopping is the profile's
(`kd_patience`, `kd_threshold`, `kd_validation`), so the epochs column is where each run stopped, decay phase
included. One thread, one run after the other; CPU is this process's (`time.process_time`), with the load average.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.002, 0.01])
    args = parser.parse_args()

    import torch

    from alignkd.chapters import call_with, ch06_llm, profile_values
    from alignkd.lm.groundtruth import markov_mixture
    from alignkd.lm.kd import train_student

    torch.set_num_threads(1)
    values = profile_values("06_llm", args.profile)
    truth = markov_mixture(vocab_size=values["vocab_size"], n_topics=values["n_topics"],
                           topic_markers=values["topic_markers"])
    tokens = dict(vocab_size=truth.vocab_size, bos_id=truth.bos_id, eos_id=truth.eos_id, pad_id=truth.pad_id)
    print(f"profile {args.profile}: patience {values['kd_patience']}, threshold {values['kd_threshold']:g}, "
          f"up to {values['kd_epochs']:g} epochs, batch {values['kd_batch']}; 1 thread")
    print("| stage | size | sequences | kd_lr | epochs | CPU s | held-out loss (nats/token) | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for stage_name, n in (("p'", values["n_high"]), ("p_target", values["n_low"])):
        data = truth.sample(n, values["max_new_tokens"], seed=1000)
        for lr in args.lrs:
            config = call_with(ch06_llm.config, {**values, "kd_lr": lr})
            train = (config.high_recall if stage_name == "p'" else config.target).train
            cpu = time.process_time()
            _, log = train_student(data, replace(train, seed=0), progress=False, **tokens)
            cpu = time.process_time() - cpu
            heldout = log["eval_loss"].dropna()
            print(f"| {stage_name} | {train.size} | {n} | {lr:g} | {log['epoch'].iloc[-1]:.1f} | {cpu:.1f} | "
                  f"{heldout.min():.4f} | {os.getloadavg()[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
