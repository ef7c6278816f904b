"""On-policy SimPO: preference optimisation without a reference (Meng et al. 2024; SPEC §8).

    run = train_simpo(policy, reference, oracle, SimPOConfig(), seed=0)   # reference: only measured
    run.trajectory, run.checkpoints, run.selected_step     # see alignkd.lm.training

SimPO replaces DPO's log-ratio to a fixed reference by the policy's own length-normalised
log-likelihood, so nothing in its loss knows the reference: the chapter that asks whether dropping the
reference escapes the trap of §3.4 runs it beside PAD. One iteration, on on-policy DPO's schedule
(`alignkd.lm.dpo`, App. C.3):

1. the current policy generates `batch_size` responses (128) from the prompt, τ = 1;
2. they are paired and labelled exactly as DPO pairs them (response i with response i + batch_size/2,
   the lower NLL under p_target is chosen, exact ties dropped);
3. no reference forward pass: the loss needs the policy alone;
4. `grad_steps` (16) Adam steps on mini-batches of `pairs_per_step` pairs (8), cycling over
   reshuffled pairs.

Loss (SimPO eq. 6, `objectives.simpo_loss`): −log σ(β(avg_w − avg_l) − γ), avg = the per-token average
log-likelihood of the response under the policy (prompt and padding masked), as TRL 1.16 computes
`CPOTrainer(loss_type="simpo", cpo_alpha=0)` (`average_log_prob=True`, `simpo_gamma` = γ).

The trajectory's `kl` column is a measurement, not part of the loss: at evaluation iterations only,
a no-grad forward pass of the frozen reference gives Σ_t log π/π_ref of the samples, so SimPO's drift
from the reference can be compared with the other algorithms'. The other logged quantities are TRL's
CPO series: `chosen_reward` / `rejected_reward` (β·avg of chosen / rejected, its `rewards/chosen` /
`rewards/rejected`), `margin` (`rewards/margins`) and `accuracy` (`rewards/accuracies`).

Model selection: the DPO rule of App. C.4 (peak `margin`), since SimPO is a pairwise preference method
and logs the same series; its implicit reward is the policy's own average log-likelihood, so the rule
reads no reference either. `select_ppo` on `reward_mean` / `reward_std` can re-select from the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import objectives
from ..validation import require_int, require_positive
from .device import autocast, resolve_device
from .dpo import response_logprobs
from .models import HFLanguageModel
from .reward import RewardOracle, pair_indices
from .selection import select_dpo
from .batched import optimizer_step as batched_step
from .training import (AlignmentRun, RunConfig, UpdatePass, finish_runs, gather_rows, keep_runs, minibatches,
                       optimizer_step, pair_minibatches, pair_row, rollout, rollout_runs, snapshot, start_runs,
                       weighted_mean)


@dataclass
class SimPOConfig(RunConfig):
    n_iterations: int = 2000
    """Online iterations, each with freshly generated pairs (as on-policy DPO, App. C.3: 2000)."""
    batch_size: int = 128
    """Responses generated per iteration, paired into batch_size / 2 preference pairs (as DPO, App. C.3: 128 → 64)."""
    grad_steps: int = 16
    """Gradient updates per iteration on that iteration's pairs (as DPO, App. C.3: 16)."""
    pairs_per_step: int = 8
    """Pairs per gradient update (as DPO, App. C.3)."""
    learning_rate: float = 5e-6
    """Adam learning rate (DPO's, App. C.3, so the two differ in their loss alone)."""
    beta: float = 2.0
    """β, the scale of the length-normalised margin (SimPO paper: 2.0 for base models, 2.5 for instruct ones).
    Not TRL's CPO default 0.1: that value is sized for summed log-ratios, and on per-token averages
    (differences of order 0.1–1) it leaves β·Δ far below γ, a nearly linear loss."""
    gamma: float = 1.0
    """Target reward margin γ (TRL: `simpo_gamma`, default 0.5). The SimPO paper tunes γ/β and finds
    ≈ 0.5 works across models (Llama-3-Base: β 2.0, γ 1.0); TRL's 0.5 pairs with its β 0.1, a ratio of 5."""
    max_new_tokens: int = 128
    """Response length cap (as DPO's max_length 128, App. C.3)."""

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "n_iterations", "batch_size", "grad_steps", "pairs_per_step", "max_new_tokens")
        if self.batch_size % 2 or self.pairs_per_step > self.batch_size // 2:
            raise ValueError(f"SimPOConfig.batch_size = {self.batch_size}, pairs_per_step = {self.pairs_per_step}: "
                             f"batch_size must be even and pairs_per_step <= batch_size / 2 (the pairs per iteration)")
        require_positive(self, "learning_rate", "beta")
        if not self.gamma >= 0:
            raise ValueError(f"SimPOConfig.gamma = {self.gamma!r}: must be >= 0")

    def reference_anchor(self) -> str:
        return "none (reference-free: length-normalised log-probability margin)"

    def update_passes(self) -> list[UpdatePass]:
        """As DPO's (the reference is scored only to measure the KL at evaluations; the rollout counts it in every
        iteration, an overestimate)."""
        pairs = min(self.pairs_per_step, self.batch_size // 2)
        return [UpdatePass("score", self.evaluations * self.batch_size, self.batch_size),
                UpdatePass("train", self.n_iterations * self.grad_steps * 2 * pairs, 2 * pairs)]


def response_average_logprobs(model, tokens: torch.Tensor, attention: torch.Tensor,
                              response: torch.Tensor) -> torch.Tensor:
    """[N] per-token average log-prob of each response (prompt and padding masked): SimPO's length normalisation."""
    return response_logprobs(model, tokens, attention, response) / response.sum(1).clamp(min=1)


def train_simpo(policy: HFLanguageModel, reference: HFLanguageModel, oracle: RewardOracle, config: SimPOConfig, *,
                seed: int, progress: bool = True, on_eval=None) -> AlignmentRun:
    """Align `policy` by on-policy SimPO with oracle preferences; no reference in the loss.

    `reference` keeps the common signature of the LM alignment algorithms and is used for one
    thing only: the trajectory's `kl` column, measured without gradients at evaluation iterations.
    Replacing it changes no update. `policy.model` is trained in place (samples start from
    `policy.prompt_ids`). Rows are measured on each evaluation iteration's fresh pairs before its
    updates. The selected step is the peak margin (`select_dpo`).
    """
    if not isinstance(config, SimPOConfig):
        raise TypeError(f"config must be a SimPOConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    prompt_ids, eos_id, pad_id = policy.prompt_ids, policy.eos_id, policy.pad_id
    policy, reference = policy.model, reference.model
    policy.to(device)
    reference.to(device).eval().requires_grad_(False)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, foreach=True)  # as in dpo.py
    shuffle = torch.Generator().manual_seed(seed)
    n = config.batch_size // 2
    rows, checkpoints = [], {}

    for iteration in tqdm(range(config.n_iterations + 1), desc="SimPO", disable=not progress):
        batch = rollout(policy, oracle, 2 * n, config, prompt_ids=prompt_ids, eos_id=eos_id, pad_id=pad_id, seed=seed,
                        iteration=iteration, device=device)
        tokens, attention, response = batch.tokens, batch.attention, batch.response
        chosen, rejected = (index.to(device) for index in pair_indices(batch.nll))

        if iteration % config.eval_every == 0 or iteration == config.n_iterations:
            policy.eval()
            with torch.no_grad(), autocast(device, config.bf16):
                logprob = response_logprobs(policy, tokens, attention, response)
                ref_logprob = response_logprobs(reference, tokens, attention, response)  # measured, not trained on
            average = logprob / response.sum(1).clamp(min=1)
            chosen_reward, rejected_reward = config.beta * average[chosen], config.beta * average[rejected]
            rows.append(pair_row(iteration, batch, logprob, ref_logprob, chosen_reward, rejected_reward, chosen,
                                 rejected))
            checkpoints[iteration] = snapshot(iteration, policy, on_eval)
        if iteration == config.n_iterations:
            break
        if len(chosen) == 0:
            continue  # every pair tied (a collapsed policy): nothing to learn from this batch

        policy.train()
        for pairs in minibatches(len(chosen), config.pairs_per_step, config.grad_steps, shuffle, device):
            w, l = chosen[pairs], rejected[pairs]
            rows_wl = torch.cat([w, l])
            with autocast(device, config.bf16):
                average = response_average_logprobs(policy, tokens[rows_wl], attention[rows_wl], response[rows_wl])
            loss = objectives.simpo_loss(average[:len(w)], average[len(w):], config.beta, config.gamma)
            optimizer_step(policy, optimizer, loss, config.max_grad_norm)

    policy.eval()
    trajectory = pd.DataFrame(rows)
    return AlignmentRun(trajectory, checkpoints, select_dpo(trajectory))


def train_simpo_runs(policies: Sequence[HFLanguageModel], reference: HFLanguageModel | Sequence[HFLanguageModel],
                     oracle: RewardOracle, config: SimPOConfig, *, seeds: Sequence[int], progress: bool = True,
                     on_eval=None) -> list[AlignmentRun]:
    """`train_simpo` for R same-shaped policies at once (policy r with `seeds[r]`) as one `BatchedLlama`, as
    `dpo.train_dpo_runs` batches DPO; run r equals `train_simpo(policies[r], ..., seed=seeds[r])` to float32
    rounding. The reference is still only measured (the `kl` column)."""
    if not isinstance(config, SimPOConfig):
        raise TypeError(f"config must be a SimPOConfig, got {type(config).__name__}")
    device, models, runs, optimizer, references = start_runs(policies, reference, config, seeds)
    first, R, n = policies[0], len(policies), config.batch_size // 2
    shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
    rows: list[list[dict]] = [[] for _ in models]
    checkpoints: list[dict] = [{} for _ in models]

    for iteration in tqdm(range(config.n_iterations + 1), desc=f"SimPO ×{R}", disable=not progress):
        batch = rollout_runs(runs, oracle, 2 * n, config, prompt_ids=first.prompt_ids, eos_id=first.eos_id,
                             pad_id=first.pad_id, seeds=seeds, iteration=iteration, device=device)
        pairs = [tuple(index.to(device) for index in pair_indices(batch.nll[r])) for r in range(R)]
        lengths = batch.response.sum(-1).clamp(min=1)  # [R, 2n]

        if iteration % config.eval_every == 0 or iteration == config.n_iterations:
            with torch.no_grad(), autocast(device, config.bf16):
                logprob = runs.response_logprobs(batch.tokens, batch.attention, batch.response)
                ref_logprob = references.response_logprobs(batch.tokens, batch.attention, batch.response)  # measured only
            average = logprob / lengths
            for r, (chosen, rejected) in enumerate(pairs):
                rows[r].append(pair_row(iteration, batch.run(r), logprob[r], ref_logprob[r],
                                        config.beta * average[r][chosen], config.beta * average[r][rejected],
                                        chosen, rejected))
            keep_runs(iteration, runs, models, checkpoints, on_eval)
        if iteration == config.n_iterations:
            break
        active = torch.tensor([len(chosen) > 0 for chosen, _ in pairs])
        if not active.any():
            continue  # every run's pairs tied: nothing to learn from this batch

        P = config.pairs_per_step
        for w, l, weight in pair_minibatches(pairs, P, config.grad_steps, shuffles, device):
            wl = torch.cat([w, l], 1)
            with autocast(device, config.bf16):
                average = runs.response_logprobs(*gather_rows(batch, wl)) / lengths.gather(1, wl)
            loss = objectives.simpo_loss(average[:, :P], average[:, P:], config.beta, config.gamma)
            batched_step(optimizer, weighted_mean(loss, weight), config.max_grad_norm, active=active)

    finish_runs(runs, models)
    trajectories = [pd.DataFrame(r) for r in rows]
    return [AlignmentRun(t, c, select_dpo(t)) for t, c in zip(trajectories, checkpoints)]
