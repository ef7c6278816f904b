"""CPU cost of one GRPO iteration with our loop and with trl.GRPOTrainer, at chapter 06's sizes.

    python benchmarks/grpo_backends.py [--sizes tiny small] [--steps 10] [--threads 1]

Both backends run the chapter's setting (params/default.yaml 06_llm, `alignkd.lm.config`): the
synthetic language (64 tokens, 8 topics, 2 topic markers), the p_target oracle of the rarest topic,
batch 64, max_new_tokens 24, β = 1, k3 in the loss. Policy and reference are fresh students of each size
(untrained: nearly every response runs to the 24-token cap, the upper end of a step's cost). An
iteration is sample + reward + reference and policy log-probs + one Adam step. Per-step time is the
median gap between consecutive iterations, in CPU time of this process (`time.process_time`: with one
thread it is what the iteration costs, little moved by other processes) and in wall time (moved by them);
TRL's start-up is building the trainer (it saves and reloads π_ref) plus `train()`'s set-up before its
first step. The load average is printed: on a shared machine trust the CPU times and compare wall times
from the same run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

VOCAB, N_TOPICS, MARKERS, BATCH, MAX_NEW_TOKENS, BETA, LEARNING_RATE = 64, 8, 2, 64, 24, 1.0, 1e-3


def setting(size: str):
    from alignkd.lm.groundtruth import BOS, EOS, PAD, markov_mixture
    from alignkd.lm.reward import RewardOracle
    from alignkd.lm.students import make_student

    p_star = markov_mixture(vocab_size=VOCAB, n_topics=N_TOPICS, topic_markers=MARKERS)
    p_target = p_star.restrict([N_TOPICS - 1])
    oracle = RewardOracle.from_language_model(p_target, p_target.sample(1000, MAX_NEW_TOKENS, seed=1))
    policy, reference = (p_star.wrap(make_student(size, VOCAB, bos_id=BOS, eos_id=EOS, pad_id=PAD, seed=seed))
                         for seed in (0, 0))
    return policy, reference, oracle


def grpo_config(backend: str, steps: int):
    from alignkd.lm.grpo import GRPOConfig

    return GRPOConfig(n_iterations=steps, batch_size=BATCH, learning_rate=LEARNING_RATE, beta=BETA,
                      max_new_tokens=MAX_NEW_TOKENS, eval_every=1, device="cpu", backend=backend)


def now() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def per_step(stamps: list[tuple[float, float]]) -> tuple[float, float]:
    """Median (CPU, wall) gap between consecutive stamps."""
    return tuple(statistics.median(b[k] - a[k] for a, b in zip(stamps, stamps[1:])) for k in (0, 1))


def run_ours(size: str, steps: int) -> dict:
    from alignkd.lm.grpo import train_grpo

    policy, reference, oracle = setting(size)
    run = train_grpo(policy, reference, oracle, grpo_config("ours", steps), seed=0, progress=False,
                     on_eval=lambda step, model: now())
    return {"backend": "ours", "size": size, "step": per_step([run.checkpoints[s] for s in sorted(run.checkpoints)])}


def run_trl(size: str, steps: int) -> dict:
    from transformers import TrainerCallback

    from alignkd.lm.grpo import trl_reward, trl_trainer

    policy, reference, oracle = setting(size)
    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(now())

    with tempfile.TemporaryDirectory() as folder:
        start = now()
        trainer = trl_trainer(policy, reference, trl_reward(oracle, policy.prompt_ids, policy.pad_id),
                              grpo_config("trl", steps), seed=0, folder=folder, callbacks=[Clock()])
        trainer.train()
    step = per_step(stamps)
    # the first step end less one median step: building the trainer and train()'s set-up
    return {"backend": "trl", "size": size, "step": step,
            "startup": tuple(stamps[0][k] - start[k] - step[k] for k in (0, 1))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import trl
    from trl import GRPOTrainer  # noqa: F401  (imported before timing: the import alone takes seconds)

    print(f"torch {torch.__version__}, trl {trl.__version__}, {args.threads} thread(s), batch {BATCH}, "
          f"max_new_tokens {MAX_NEW_TOKENS}, {args.steps} steps; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for size in args.sizes:
        rows = [run_ours(size, args.steps), run_trl(size, args.steps)]
        for row in rows:
            startup = (f"; start-up {row['startup'][0]:.2f} s CPU, {row['startup'][1]:.2f} s wall"
                       if "startup" in row else "")
            print(f"{row['size']:>6} {row['backend']:>4}: {row['step'][0]:.3f} s CPU, {row['step'][1]:.3f} s wall "
                  f"per iteration{startup}")
        print(f"{size:>6} trl/ours per iteration: {rows[1]['step'][0] / rows[0]['step'][0]:.2f} (CPU), "
              f"{rows[1]['step'][1] / rows[0]['step'][1]:.2f} (wall)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
