"""CPU seconds of N same-shaped alignment runs made one at a time against the same runs batched (`lm.batched`).

    python benchmarks/lm_batched.py [--runs 12] [--iterations 50] [--grad-steps 1] [--pairs-per-step 32]

Chapter 06's sizes (`low_size` student, `vocab_size`, `batch_size`, `max_new_tokens` of `--profile`, default
"default") and its ground truth's oracle. Each of the N runs is a seed of one on-policy DPO run from the same
reference (as the chapter's seeds of one algorithm are): per iteration it samples `batch_size` responses with the
iteration's seed (`training.iteration_seed`), scores them under the oracle (pairs i, i + batch_size/2, ties dropped)
and the frozen reference, and takes one Adam step on the DPO loss of all its untied pairs (`--grad-steps 4
--pairs-per-step 8`: chapter 06's `dpo_online` schedule, mini-batches from each run's own shuffle as `train_dpo`
draws them). One at a time is `generation.sample`, `dpo.response_logprobs` and `training.optimizer_step` per
model, as `lm/dpo.py` runs them; batched is one `BatchedLlama` for the N policies (the shared reference and the
oracle score all N·batch_size responses in one call; a run's short mini-batch is padded with weight-0 pairs).

One difference is not reproduced: a run whose pairs all tie skips its update one at a time, while the batched Adam
step still moves it by its momentum (each of its batch_size / 2 pairs would be two identical responses: a collapsed
policy). Both arms run in this process with one thread (what a chapter gets when the book runs one per core), one
after the other; the printed CPU is this process's (`time.process_time`). At the end the two arms' sampled tokens
and final weights are compared: they are the same runs, to float32 rounding. A sampled token can differ only where
the two largest p/E of a draw tie within rounding (`lm/batched.py`); from there that run samples other responses
and its weights drift apart (seen once in 600 run-iterations with `--grad-steps 4 --pairs-per-step 8`: a relative
gap of 3.6e-7 at iteration 22 of run 2). The load average is printed: on a shared machine compare the two arms of
one run only.
"""

from __future__ import annotations

import argparse
import copy
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--runs", type=int, default=12, help="N same-shaped runs (seeds 0..N-1)")
    parser.add_argument("--iterations", type=int, default=50, help="K iterations of sample, score, update per run "
                        "(default: the chapter's `iterations`, ~70 s in all on an idle core)")
    parser.add_argument("--grad-steps", type=int, default=1, help="DPO steps per iteration (chapter 06: 4)")
    parser.add_argument("--pairs-per-step", type=int, default=None,
                        help="pairs per step (default: all batch_size / 2 of them; chapter 06: 8)")
    args = parser.parse_args()

    import torch

    from alignkd import objectives
    from alignkd.chapters import profile_values
    from alignkd.lm import training
    from alignkd.lm.batched import BatchedLlama, RunAdam, optimizer_step, stack_samples
    from alignkd.lm.dpo import response_logprobs
    from alignkd.lm.generation import sample
    from alignkd.lm.groundtruth import markov_mixture
    from alignkd.lm.models import suppress_tokens
    from alignkd.lm.reward import RewardOracle, pair_indices, pair_preferences
    from alignkd.lm.students import count_parameters, make_student

    torch.set_num_threads(1)
    values = profile_values("06_llm", args.profile)
    size, vocab, batch_size, max_new_tokens = (values[k] for k in ("low_size", "vocab_size", "batch_size",
                                                                   "max_new_tokens"))
    learning_rate, beta, runs, K = values["dpo_lr"], values["beta"], args.runs, args.iterations
    grad_steps, pairs_per_step = args.grad_steps, args.pairs_per_step or batch_size // 2
    truth = markov_mixture(vocab_size=vocab, n_topics=values["n_topics"], topic_markers=values["topic_markers"])
    oracle = RewardOracle.from_language_model(truth.restrict([truth.topics[-1]]))
    prompt, eos, pad, suppressed = truth.prompt_ids, truth.eos_id, truth.pad_id, truth.suppress_ids
    reference = make_student(size, vocab, bos_id=truth.bos_id, eos_id=eos, pad_id=pad, seed=0)
    suppress_tokens(reference, suppressed)
    reference.eval().requires_grad_(False)
    seeds, n = list(range(runs)), batch_size // 2
    print(f"N = {runs} runs of a '{size}' student ({count_parameters(reference)} parameters, vocab {vocab}), "
          f"K = {K} iterations of: sample {batch_size} responses (max_new_tokens {max_new_tokens}), score them, "
          f"{grad_steps} DPO Adam step(s) on {pairs_per_step} of their pairs; 1 thread")

    def one_at_a_time():  # lm/dpo.py's iteration, with --grad-steps steps of --pairs-per-step pairs
        policies = [copy.deepcopy(reference).requires_grad_(True) for _ in seeds]
        optimizers = [torch.optim.Adam(p.parameters(), lr=learning_rate, foreach=True) for p in policies]
        shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
        drawn = []
        for iteration in range(K):
            for seed, policy, optimizer, shuffle in zip(seeds, policies, optimizers, shuffles):
                samples = sample(policy, prompt, batch_size, max_new_tokens, eos_id=eos, pad_id=pad,
                                 batch_size=batch_size, seed=training.iteration_seed(seed, iteration))
                drawn.append(samples.tokens)
                tokens, attention, response = samples.tokens, samples.mask, samples.response_mask[:, 1:].float()
                chosen, rejected = pair_indices(oracle.nll(samples))
                with torch.no_grad():
                    ref_logprob = response_logprobs(reference, tokens, attention, response)
                if len(chosen) == 0:
                    continue
                for pairs in training.minibatches(len(chosen), pairs_per_step, grad_steps, shuffle, "cpu"):
                    w, l = chosen[pairs], rejected[pairs]
                    rows = torch.cat([w, l])
                    logprob = response_logprobs(policy, tokens[rows], attention[rows], response[rows])
                    loss = objectives.dpo_loss(logprob[:len(w)], logprob[len(w):], ref_logprob[w], ref_logprob[l], beta)
                    training.optimizer_step(policy, optimizer, loss, 0.0)
        return [p.state_dict() for p in policies], drawn

    def batched():
        batch = BatchedLlama.from_models([reference] * runs, suppress_ids=suppressed)
        for tensor in batch.parameters():
            tensor.requires_grad_(True)
        optimizer = RunAdam(batch.parameters(), lr=learning_rate)
        shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
        first, second = torch.arange(n), torch.arange(n) + n
        drawn = []
        for iteration in range(K):
            per_run = batch.sample(prompt, batch_size, max_new_tokens, eos_id=eos, pad_id=pad,
                                   seeds=[training.iteration_seed(seed, iteration) for seed in seeds])
            drawn.append(per_run)
            every = stack_samples(per_run, pad)  # R·batch_size rows, run-major
            width = every.tokens.shape[1]
            tokens, attention = every.tokens.view(runs, batch_size, width), every.mask.view(runs, batch_size, width)
            response = every.response_mask[:, 1:].float().view(runs, batch_size, width - 1)
            nll = oracle.nll(every).view(runs, batch_size)
            first_is_chosen, tie = pair_preferences(nll[:, :n], nll[:, n:])
            chosen, rejected = torch.where(first_is_chosen, first, second), torch.where(first_is_chosen, second, first)
            with torch.no_grad():
                ref_logprob = response_logprobs(reference, every.tokens, every.mask,
                                                response.flatten(0, 1)).view(runs, batch_size)
            # each run's mini-batches of its untied pairs, drawn from its own shuffle as one at a time draws them
            # (index bookkeeping only); a short mini-batch is padded with weight-0 pairs
            untied = [(~tie[run]).nonzero()[:, 0] for run in range(runs)]
            schedules = [list(training.minibatches(len(slots), pairs_per_step, grad_steps, shuffle, "cpu"))
                         if len(slots) else [] for slots, shuffle in zip(untied, shuffles)]
            for step in range(grad_steps):
                slot, weight = torch.zeros(runs, pairs_per_step, dtype=torch.long), torch.zeros(runs, pairs_per_step)
                for run, schedule in enumerate(schedules):
                    if schedule:
                        picked = untied[run][schedule[step]]
                        slot[run, :len(picked)], weight[run, :len(picked)] = picked, 1.0
                w, l = chosen.gather(1, slot), rejected.gather(1, slot)
                rows = torch.cat([w, l], 1)[..., None].expand(-1, -1, width)
                logprob = batch.response_logprobs(tokens.gather(1, rows), attention.gather(1, rows),
                                                  response.gather(1, rows[..., 1:]))
                loss = objectives.dpo_loss(logprob[:, :pairs_per_step], logprob[:, pairs_per_step:],
                                           ref_logprob.gather(1, w), ref_logprob.gather(1, l), beta)
                optimizer_step(optimizer, (loss * weight).sum(1) / weight.sum(1).clamp(min=1), 0.0)
        return [batch.state_dict(r) for r in range(runs)], [s.tokens for per_run in drawn for s in per_run]

    measured, results = {}, {}
    for name, arm in (("one at a time", one_at_a_time), ("batched", batched)):
        cpu, wall = time.process_time(), time.perf_counter()
        results[name] = arm()
        measured[name] = (time.process_time() - cpu, time.perf_counter() - wall)
        print(f"{name:>13}: {measured[name][0]:6.1f} s CPU, {measured[name][1]:6.1f} s wall "
              f"(load average {os.getloadavg()[0]:.2f})")
    # the one-at-a-time arm's tokens come iteration-major, run-minor: the batched arm's order too
    (alone_states, alone_tokens), (batched_states, batched_tokens) = results["one at a time"], results["batched"]
    differ = [i for i, (a, b) in enumerate(zip(alone_tokens, batched_tokens)) if not torch.equal(a, b)]
    first = "none" if not differ else f"first at iteration {differ[0] // runs}, run {differ[0] % runs}"
    weight_gap = max(float((a[k] - b[k]).abs().max()) for a, b in zip(alone_states, batched_states) for k in b)
    print(f"CPU ratio one at a time / batched at N = {runs}: "
          f"{measured['one at a time'][0] / measured['batched'][0]:.2f}x; iterations x runs whose sampled tokens "
          f"differ: {len(differ)} of {len(alone_tokens)} ({first}); largest final weight difference {weight_gap:.2e}")


if __name__ == "__main__":
    main()
