"""On-policy DPO against a fixed reference (paper §3.2, App. C.3).

    run = train_dpo(policy, reference, oracle, DPOConfig(), seed=0)   # policy, reference: HFLanguageModel
    run.trajectory, run.checkpoints, run.selected_step     # see alignkd.lm.training

One iteration (App. C.3):

1. the current policy generates `batch_size` responses (128) from the prompt, τ = 1;
2. they are paired (response i with response i + batch_size/2: independent samples, so a fixed pairing
   is a random one) and labelled by the oracle: the lower NLL under p_target is chosen (y_w);
   exact ties (identical responses, once the policy collapses) carry no preference and are dropped;
3. reference log-probs of every response are computed once;
4. `grad_steps` (16) Adam steps on mini-batches of `pairs_per_step` pairs (8 = the paper's
   mini-batch 4 × 2 accumulation steps), cycling over reshuffled pairs: 16 × 8 = 2 passes over 64.

Loss (eq. 2): −log σ(z), z = β·[(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))],
sequence log-probs summed over the response tokens only (the prompt is masked, App. C.3), as TRL's
`DPOTrainer` (loss_type "sigmoid") computes them. Its gradient in Δθ = log π_θ(y_w)/π_θ(y_l) is
−β·σ(−z) (§3.3), which saturates when the reference offset makes z ≫ 0.

Why not TRL's `DPOTrainer`: the on-policy loop needs a fresh dataset every iteration (2000 of them),
and a Trainer per iteration re-tokenises, re-wraps the model and re-creates the optimiser (losing
Adam's state) each time; the loss is `objectives.dpo_loss`, tested against eq. 2 and its closed-form
gradient. The logged quantities are TRL's (`rewards/chosen`, `rewards/rejected`,
`rewards/margins`, `rewards/accuracies`: implicit rewards β·log π_θ/π_ref), which are the four
series of App. Fig. 14 that the model selection of App. C.4 reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import objectives
from ..validation import require_int, require_positive
from .generation import token_logprobs
from .models import HFLanguageModel
from .reward import RewardOracle, pair_indices
from .device import autocast, resolve_device
from .selection import select_dpo
from .batched import optimizer_step as batched_step
from .training import (AlignmentRun, RunConfig, UpdatePass, finish_runs, gather_rows, keep_runs, minibatches,
                       optimizer_step, pair_minibatches, pair_row, rollout, rollout_runs, snapshot, start_runs,
                       weighted_mean)


@dataclass
class DPOConfig(RunConfig):
    n_iterations: int = 2000
    """Online iterations, each with freshly generated pairs (App. C.3: 2000)."""
    batch_size: int = 128
    """Responses generated per iteration, paired into batch_size / 2 preference pairs (App. C.3: 128 → 64)."""
    grad_steps: int = 16
    """Gradient updates per iteration on that iteration's pairs (App. C.3: 16)."""
    pairs_per_step: int = 8
    """Pairs per gradient update (App. C.3: mini-batch 4 × 2 gradient-accumulation steps)."""
    learning_rate: float = 5e-6
    """Adam learning rate (App. C.3)."""
    beta: float = 0.7
    """DPO coefficient β (App. C.3: 0.7)."""
    max_new_tokens: int = 128
    """Response length cap (App. C.3: max_length 128)."""

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "n_iterations", "batch_size", "grad_steps", "pairs_per_step", "max_new_tokens")
        if self.batch_size % 2 or self.pairs_per_step > self.batch_size // 2:
            raise ValueError(f"DPOConfig.batch_size = {self.batch_size}, pairs_per_step = {self.pairs_per_step}: "
                             f"batch_size must be even and pairs_per_step <= batch_size / 2 (the pairs per iteration)")
        require_positive(self, "learning_rate", "beta")

    def reference_anchor(self) -> str:
        return "log-ratio to the reference inside the pairwise loss (implicit reverse KL)"

    def update_passes(self) -> list[UpdatePass]:
        """The policy's log-probs at evaluations (the margin), then `grad_steps` steps of `pairs_per_step` pairs."""
        pairs = min(self.pairs_per_step, self.batch_size // 2)
        return [UpdatePass("score", self.evaluations * self.batch_size, self.batch_size),
                UpdatePass("train", self.n_iterations * self.grad_steps * 2 * pairs, 2 * pairs)]


def response_logprobs(model, tokens: torch.Tensor, attention: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """[N] log-prob of each response (sum over response tokens; prompt and padding masked)."""
    logprob = token_logprobs(model, tokens, attention).float()
    return torch.where(response.bool(), logprob, torch.zeros((), device=logprob.device)).sum(1)


def train_dpo(policy: HFLanguageModel, reference: HFLanguageModel, oracle: RewardOracle, config: DPOConfig, *,
              seed: int, progress: bool = True, on_eval=None) -> AlignmentRun:
    """Align `policy` by on-policy DPO with oracle preferences, anchored to the frozen `reference`.

    `policy.model` is trained in place (samples start from `policy.prompt_ids`). Trajectory rows are measured on each evaluation iteration's fresh
    pairs before its updates: TRL's implicit-reward series (chosen/rejected reward, margin,
    accuracy), the oracle's rewards of chosen and rejected responses, and the reward mean/std and
    KL of all `batch_size` responses. The selected step is the peak margin (`select_dpo`, App. C.4).
    """
    if not isinstance(config, DPOConfig):
        raise TypeError(f"config must be a DPOConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    prompt_ids, eos_id, pad_id = policy.prompt_ids, policy.eos_id, policy.pad_id
    policy, reference = policy.model, reference.model
    policy.to(device)
    reference.to(device).eval().requires_grad_(False)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, foreach=True)  # as in kd.py
    shuffle = torch.Generator().manual_seed(seed)
    n = config.batch_size // 2
    rows, checkpoints = [], {}

    for iteration in tqdm(range(config.n_iterations + 1), desc="DPO", disable=not progress):
        batch = rollout(policy, oracle, 2 * n, config, prompt_ids=prompt_ids, eos_id=eos_id, pad_id=pad_id, seed=seed,
                        iteration=iteration, device=device)
        tokens, attention, response = batch.tokens, batch.attention, batch.response
        chosen, rejected = (index.to(device) for index in pair_indices(batch.nll))
        with torch.no_grad(), autocast(device, config.bf16):
            ref_logprob = response_logprobs(reference, tokens, attention, response)

        if iteration % config.eval_every == 0 or iteration == config.n_iterations:
            policy.eval()
            with torch.no_grad(), autocast(device, config.bf16):
                logprob = response_logprobs(policy, tokens, attention, response)
            chosen_reward = objectives.dpo_implicit_reward(logprob[chosen], ref_logprob[chosen], config.beta)
            rejected_reward = objectives.dpo_implicit_reward(logprob[rejected], ref_logprob[rejected], config.beta)
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
                logprob = response_logprobs(policy, tokens[rows_wl], attention[rows_wl], response[rows_wl])
            loss = objectives.dpo_loss(logprob[:len(w)], logprob[len(w):], ref_logprob[w], ref_logprob[l], config.beta)
            optimizer_step(policy, optimizer, loss, config.max_grad_norm)

    policy.eval()
    trajectory = pd.DataFrame(rows)
    return AlignmentRun(trajectory, checkpoints, select_dpo(trajectory))


def train_dpo_runs(policies: Sequence[HFLanguageModel], reference: HFLanguageModel | Sequence[HFLanguageModel],
                   oracle: RewardOracle, config: DPOConfig, *, seeds: Sequence[int], progress: bool = True,
                   on_eval=None) -> list[AlignmentRun]:
    """`train_dpo` for R same-shaped policies at once (policy r with `seeds[r]`) as one `BatchedLlama`; run r equals
    `train_dpo(policies[r], ..., seed=seeds[r])` to float32 rounding (`train_grpo_runs` says how). Each run pairs its
    own responses, draws its mini-batches from its own shuffle (a short one padded with weight-0 pairs) and sits out
    an iteration whose pairs all tie, as it does alone (`batched.RunAdam`)."""
    if not isinstance(config, DPOConfig):
        raise TypeError(f"config must be a DPOConfig, got {type(config).__name__}")
    device, models, runs, optimizer, references = start_runs(policies, reference, config, seeds)
    first, R, n, beta = policies[0], len(policies), config.batch_size // 2, config.beta
    shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
    rows: list[list[dict]] = [[] for _ in models]
    checkpoints: list[dict] = [{} for _ in models]

    for iteration in tqdm(range(config.n_iterations + 1), desc=f"DPO ×{R}", disable=not progress):
        batch = rollout_runs(runs, oracle, 2 * n, config, prompt_ids=first.prompt_ids, eos_id=first.eos_id,
                             pad_id=first.pad_id, seeds=seeds, iteration=iteration, device=device)
        pairs = [tuple(index.to(device) for index in pair_indices(batch.nll[r])) for r in range(R)]
        with torch.no_grad(), autocast(device, config.bf16):
            ref_logprob = references.response_logprobs(batch.tokens, batch.attention, batch.response)

        if iteration % config.eval_every == 0 or iteration == config.n_iterations:
            with torch.no_grad(), autocast(device, config.bf16):
                logprob = runs.response_logprobs(batch.tokens, batch.attention, batch.response)
            for r, (chosen, rejected) in enumerate(pairs):
                rows[r].append(pair_row(iteration, batch.run(r), logprob[r], ref_logprob[r],
                                        objectives.dpo_implicit_reward(logprob[r][chosen], ref_logprob[r][chosen], beta),
                                        objectives.dpo_implicit_reward(logprob[r][rejected], ref_logprob[r][rejected],
                                                                       beta), chosen, rejected))
            keep_runs(iteration, runs, models, checkpoints, on_eval)
        if iteration == config.n_iterations:
            break
        active = torch.tensor([len(chosen) > 0 for chosen, _ in pairs])
        if not active.any():
            continue  # every run's pairs tied: nothing to learn from this batch

        P = config.pairs_per_step
        for w, l, weight in pair_minibatches(pairs, P, config.grad_steps, shuffles, device):
            with autocast(device, config.bf16):
                logprob = runs.response_logprobs(*gather_rows(batch, torch.cat([w, l], 1)))
            loss = objectives.dpo_loss(logprob[:, :P], logprob[:, P:], ref_logprob.gather(1, w),
                                       ref_logprob.gather(1, l), beta)
            batched_step(optimizer, weighted_mean(loss, weight), config.max_grad_norm, active=active)

    finish_runs(runs, models)
    trajectories = [pd.DataFrame(r) for r in rows]
    return [AlignmentRun(t, c, select_dpo(t)) for t, c in zip(trajectories, checkpoints)]
