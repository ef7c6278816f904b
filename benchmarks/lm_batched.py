"""CPU seconds of N same-shaped alignment runs made one at a time against the same N runs batched (`alignkd.lm.batched`).

    python benchmarks/lm_batched.py [--runs 12] [--iterations 20] [--profile default]

Chapter 06's sizes (`low_size` student, `vocab_size`, `batch_size`, `max_new_tokens` of the profile) and its
ground truth's oracle. Each of the N runs is a seed of one on-policy DPO run from the same reference (as the
chapter's seeds of one algorithm are): per iteration it samples `batch_size` responses with the iteration's seed
(`training.iteration_seed`), scores them under the oracle (pairs i, i + batch_size/2, ties dropped) and the frozen
reference, and takes one Adam step on the DPO loss of all its untied pairs. One at a time is
`generation.sample`, `dpo.response_logprobs` and `training.optimizer_step` per model, as `lm/dpo.py` runs them;
batched is one `BatchedLlama` for the N policies (the shared reference and the oracle score all N·batch_size
responses in one call). Both arms run in this process with one thread (what a chapter gets when the book runs one
per core), one after the other; the printed CPU is this process's (`time.process_time`). At the end the two arms'
sampled tokens and final weights are compared: they are the same runs. The load average is printed: on a shared
machine compare the two arms of one run only.
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
    parser.add_argument("--iterations", type=int, default=20, help="K iterations of sample, score, update per run")
    args = parser.parse_args()

    import torch

    from alignkd import objectives
    from alignkd.chapters import profile_values
    from alignkd.lm import training
    from alignkd.lm.batched import BatchedLlama, optimizer_step, stack_samples
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
    truth = markov_mixture(vocab_size=vocab, n_topics=values["n_topics"], topic_markers=values["topic_markers"])
    oracle = RewardOracle.from_language_model(truth.restrict([truth.topics[-1]]))
    prompt, eos, pad, suppressed = truth.prompt_ids, truth.eos_id, truth.pad_id, truth.suppress_ids
    reference = make_student(size, vocab, bos_id=truth.bos_id, eos_id=eos, pad_id=pad, seed=0)
    suppress_tokens(reference, suppressed)
    reference.eval().requires_grad_(False)
    seeds, n = list(range(runs)), batch_size // 2
    print(f"N = {runs} runs of a '{size}' student ({count_parameters(reference)} parameters, vocab {vocab}), "
          f"K = {K} iterations of: sample {batch_size} responses (max_new_tokens {max_new_tokens}), score them, "
          f"one DPO Adam step on their pairs; 1 thread")

    def one_at_a_time():
        policies = [copy.deepcopy(reference).requires_grad_(True) for _ in seeds]
        optimizers = [torch.optim.Adam(p.parameters(), lr=learning_rate, foreach=True) for p in policies]
        drawn = []
        for iteration in range(K):
            for seed, policy, optimizer in zip(seeds, policies, optimizers):
                samples = sample(policy, prompt, batch_size, max_new_tokens, eos_id=eos, pad_id=pad,
                                 batch_size=batch_size, seed=training.iteration_seed(seed, iteration))
                drawn.append(samples.tokens)
                response = samples.response_mask[:, 1:].float()
                chosen, rejected = pair_indices(oracle.nll(samples))
                with torch.no_grad():
                    ref_logprob = response_logprobs(reference, samples.tokens, samples.mask, response)
                if len(chosen) == 0:
                    continue
                policy.train()
                rows = torch.cat([chosen, rejected])
                logprob = response_logprobs(policy, samples.tokens[rows], samples.mask[rows], response[rows])
                loss = objectives.dpo_loss(logprob[:len(chosen)], logprob[len(chosen):], ref_logprob[chosen],
                                           ref_logprob[rejected], beta)
                training.optimizer_step(policy, optimizer, loss, 0.0)
        return [p.state_dict() for p in policies], drawn

    def batched():
        batch = BatchedLlama.from_models([reference] * runs, suppress_ids=suppressed)
        for tensor in batch.parameters():
            tensor.requires_grad_(True)
        optimizer = torch.optim.Adam(batch.parameters(), lr=learning_rate, foreach=True)
        first, second = torch.arange(n), torch.arange(n) + n
        drawn = []
        for iteration in range(K):
            per_run = batch.sample(prompt, batch_size, max_new_tokens, eos_id=eos, pad_id=pad,
                                   seeds=[training.iteration_seed(seed, iteration) for seed in seeds])
            drawn.append(per_run)
            every = stack_samples(per_run, pad)  # R·batch_size rows, run-major
            tokens, mask = every.tokens.view(runs, batch_size, -1), every.mask.view(runs, batch_size, -1)
            response = every.response_mask[:, 1:].float().view(runs, batch_size, -1)
            nll = oracle.nll(every).view(runs, batch_size)
            first_is_chosen, tie = pair_preferences(nll[:, :n], nll[:, n:])
            chosen, rejected = torch.where(first_is_chosen, first, second), torch.where(first_is_chosen, second, first)
            untied = (~tie).float()  # tied pairs carry no preference: weight 0, as one-at-a-time drops them
            with torch.no_grad():
                ref_logprob = response_logprobs(reference, every.tokens, every.mask,
                                                response.flatten(0, 1)).view(runs, batch_size)
            logprob = batch.response_logprobs(tokens, mask, response)
            loss = objectives.dpo_loss(logprob.gather(1, chosen), logprob.gather(1, rejected),
                                       ref_logprob.gather(1, chosen), ref_logprob.gather(1, rejected), beta)
            mean_loss = (loss * untied).sum(1) / untied.sum(1).clamp(min=1)
            optimizer_step(batch, optimizer, mean_loss, 0.0)
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
    same_tokens = all(torch.equal(a, b) for a, b in zip(alone_tokens, batched_tokens))
    weight_gap = max(float((a[k] - b[k]).abs().max()) for a, b in zip(alone_states, batched_states) for k in b)
    print(f"CPU ratio one at a time / batched at N = {runs}: "
          f"{measured['one at a time'][0] / measured['batched'][0]:.2f}x; same sampled tokens in every iteration: "
          f"{same_tokens}; largest final weight difference {weight_gap:.2e}")


if __name__ == "__main__":
    main()
