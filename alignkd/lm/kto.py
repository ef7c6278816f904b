"""On-policy KTO against a fixed reference (Ethayarajh et al. 2024; paper §3.4, SPEC §8).

    run = train_kto(policy, reference, oracle, KTOConfig(), seed=0)   # policy, reference: HFLanguageModel
    run.trajectory, run.checkpoints, run.selected_step     # see alignkd.lm.training

KTO labels single responses desirable or undesirable instead of pairing them, and compares each
response's log-ratio r = log π_θ(y) − log π_ref(y) with a reference point z_ref, an estimate of
KL(π_θ ‖ π_ref). It keeps the fixed reference, which is why §3.4 expects the offset-induced saturation
of DPO to persist in it. One iteration, on the schedule of on-policy DPO (`alignkd.lm.dpo`, App. C.3):

1. the current policy generates `batch_size` responses (128) from the prompt, τ = 1;
2. the oracle scores them (folded reward of eq. 10); a response is desirable when its reward is above
   the batch median, undesirable when below, unlabelled when equal to it (`label_by_median`). The
   labels are balanced by construction (half and half when the rewards are distinct), which is the
   case where KTO recommends λ_D = λ_U (its weights' defaults, 1 and 1);
3. reference and policy log-probs of every response are computed once, without gradients: the
   reference's for the loss, the policy's for z_ref = max(0, mean r) (`objectives.kto_reference_point`),
   an estimate from samples of the current policy, held fixed through the iteration's updates;
4. `grad_steps` (16) Adam steps on mini-batches of `examples_per_step` labelled responses (16 = the
   responses of DPO's 8 pairs), cycling over reshuffled responses.

Loss (KTO eq. 7, `objectives.kto_loss`): desirable λ_D·(1 − σ(β(r − z_ref))), undesirable
λ_U·(1 − σ(β(z_ref − r))), r summed over the response tokens only (prompt masked), averaged over the
mini-batch as TRL's `KTOTrainer` (loss_type "kto") does. z_ref is detached: no gradient flows through it.

Why not TRL's `KTOTrainer`: the reasons of `alignkd.lm.dpo` (a fresh dataset every iteration, Adam's
state kept across iterations). TRL estimates z_ref from mismatched prompt/completion pairs because its
data are offline; here every response is a sample of the current policy from the one prompt, so the
iteration's own samples give the estimate directly. The logged quantities are TRL's: `z_ref` (its
`kl`, clamped at 0), `chosen_reward` / `rejected_reward` (its `rewards/chosen` / `rewards/rejected`:
β·r means over desirable / undesirable responses) and `margin` (`rewards/margins`, their difference).

Model selection: the DPO rule of App. C.4 (peak `margin`). KTO's implicit reward β·r is DPO's, and
with balanced labels its margin is the same contrast between the oracle's better and worse halves,
so the rule the paper applies to the reference-anchored preference method carries over; the
trajectory also has `reward_mean` / `reward_std`, so `select_ppo` can re-select without re-training.
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
from .reward import RewardOracle
from .selection import select_dpo
from .batched import optimizer_step as batched_step
from .training import (AlignmentRun, Rollout, RunConfig, UpdatePass, finish_runs, gather_rows, keep_runs, minibatches,
                       optimizer_step, padded, rollout, rollout_runs, run_minibatches, snapshot, start_runs,
                       weighted_mean)


@dataclass
class KTOConfig(RunConfig):
    n_iterations: int = 2000
    """Online iterations, each with freshly generated responses (as on-policy DPO, App. C.3: 2000)."""
    batch_size: int = 128
    """Responses generated and labelled per iteration (as DPO's 128, App. C.3)."""
    grad_steps: int = 16
    """Gradient updates per iteration on that iteration's responses (as DPO's 16, App. C.3)."""
    examples_per_step: int = 16
    """Labelled responses per gradient update: the 2 × 8 responses of DPO's 8 pairs per step (App. C.3)."""
    learning_rate: float = 5e-6
    """Adam learning rate (DPO's, App. C.3; TRL's KTOConfig default is 1e-6)."""
    beta: float = 0.7
    """KTO coefficient β on the log-ratio (the paper's DPO β 0.7, App. C.3, so both keep the same anchor;
    TRL's default is 0.1)."""
    desirable_weight: float = 1.0
    """λ_D, the weight of desirable responses' losses (TRL's default; KTO recommends λ_D = λ_U for balanced
    labels, which the median split gives)."""
    undesirable_weight: float = 1.0
    """λ_U, the weight of undesirable responses' losses (TRL's default)."""
    max_new_tokens: int = 128
    """Response length cap (as DPO's max_length 128, App. C.3)."""

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "n_iterations", "batch_size", "grad_steps", "examples_per_step", "max_new_tokens")
        if self.batch_size < 2 or self.examples_per_step > self.batch_size:
            raise ValueError(f"KTOConfig.batch_size = {self.batch_size}, examples_per_step = {self.examples_per_step}: "
                             f"batch_size must be >= 2 (a median split) and examples_per_step <= batch_size")
        require_positive(self, "learning_rate", "beta", "desirable_weight", "undesirable_weight")

    def reference_anchor(self) -> str:
        return "log-ratio to the reference inside the loss, against a KL reference point"

    def update_passes(self) -> list[UpdatePass]:
        """The policy's log-probs of every batch (z_ref), then `grad_steps` steps of `examples_per_step` responses."""
        n, batch, step = self.n_iterations, self.batch_size, min(self.examples_per_step, self.batch_size)
        return [UpdatePass("score", (n + 1) * batch, batch), UpdatePass("train", n * self.grad_steps * step, step)]


def label_by_median(reward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(desirable, labelled), [B] bools: desirable above the batch median, undesirable below it.

    Responses whose reward equals the median (identical responses, once the policy collapses; the
    middle one of an odd batch) carry no label, as DPO drops tied pairs; so the two classes always
    have equal size when the rewards are distinct, and never differ by more than the ties allow.
    """
    median = torch.quantile(reward.float(), 0.5)  # the midpoint of the two middle values for an even batch
    desirable, undesirable = reward > median, reward < median
    return desirable, desirable | undesirable


def mean_over(values: torch.Tensor, which: torch.Tensor) -> float:
    """Mean of `values` where `which`; NaN for an empty class (TRL then skips the metric)."""
    return float(values[which].mean()) if which.any() else float("nan")


def kto_row(iteration: int, batch: Rollout, logprob: torch.Tensor, ref_logprob: torch.Tensor, z_ref: torch.Tensor,
            desirable: torch.Tensor, labelled: torch.Tensor, beta: float) -> dict:
    """The trajectory row of one KTO evaluation (columns in `train_kto`): the common columns, TRL's series on the
    iteration's responses and the oracle's view of the two classes (`desirable`, `labelled`: CPU bools)."""
    implicit = objectives.dpo_implicit_reward(logprob, ref_logprob, beta).cpu()  # TRL: β·r
    undesirable = labelled & ~desirable
    chosen_reward, rejected_reward = mean_over(implicit, desirable), mean_over(implicit, undesirable)
    reward = batch.reward
    return {
        "iteration": iteration,
        "reward_mean": float(reward.mean()),
        "reward_std": float(reward.std()),
        "nll_mean": float(batch.nll.mean()),
        "kl": float((logprob - ref_logprob).mean()),
        "z_ref": float(z_ref),
        "chosen_reward": chosen_reward,
        "rejected_reward": rejected_reward,
        "margin": chosen_reward - rejected_reward,
        "chosen_oracle_reward": mean_over(reward, desirable),
        "rejected_oracle_reward": mean_over(reward, undesirable),
        "n_desirable": int(desirable.sum()),
        "n_undesirable": int(undesirable.sum()),
    }


def train_kto(policy: HFLanguageModel, reference: HFLanguageModel, oracle: RewardOracle, config: KTOConfig, *,
              seed: int, progress: bool = True, on_eval=None) -> AlignmentRun:
    """Align `policy` by on-policy KTO with oracle labels, anchored to the frozen `reference`.

    `policy.model` is trained in place (samples start from `policy.prompt_ids`). Trajectory rows are
    measured on each evaluation iteration's fresh responses before its updates: the common columns
    (`alignkd.lm.training`; `kl` unclamped, comparable with the other algorithms), TRL's KTO series
    (`z_ref`, `chosen_reward`, `rejected_reward`, `margin`), the oracle's rewards of the desirable and
    undesirable responses and the class sizes. The selected step is the peak margin (`select_dpo`).
    """
    if not isinstance(config, KTOConfig):
        raise TypeError(f"config must be a KTOConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    prompt_ids, eos_id, pad_id = policy.prompt_ids, policy.eos_id, policy.pad_id
    policy, reference = policy.model, reference.model
    policy.to(device)
    reference.to(device).eval().requires_grad_(False)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, foreach=True)  # as in dpo.py
    shuffle = torch.Generator().manual_seed(seed)
    rows, checkpoints = [], {}

    for iteration in tqdm(range(config.n_iterations + 1), desc="KTO", disable=not progress):
        batch = rollout(policy, oracle, config.batch_size, config, prompt_ids=prompt_ids, eos_id=eos_id, pad_id=pad_id,
                        seed=seed, iteration=iteration, device=device)
        tokens, attention, response, nll, reward = batch
        desirable_cpu, labelled_cpu = label_by_median(reward)
        labelled = labelled_cpu.nonzero()[:, 0].to(device)
        desirable = desirable_cpu.to(device)
        policy.eval()
        with torch.no_grad(), autocast(device, config.bf16):
            ref_logprob = response_logprobs(reference, tokens, attention, response)
            logprob = response_logprobs(policy, tokens, attention, response)
        z_ref = objectives.kto_reference_point(logprob, ref_logprob)

        if iteration % config.eval_every == 0 or iteration == config.n_iterations:
            rows.append(kto_row(iteration, batch, logprob, ref_logprob, z_ref, desirable_cpu, labelled_cpu,
                                config.beta))
            checkpoints[iteration] = snapshot(iteration, policy, on_eval)
        if iteration == config.n_iterations:
            break
        if len(labelled) == 0:
            continue  # every response at the median (a collapsed policy): nothing to learn from this batch

        policy.train()
        for step in minibatches(len(labelled), config.examples_per_step, config.grad_steps, shuffle, device):
            chosen = labelled[step]
            with autocast(device, config.bf16):
                step_logprob = response_logprobs(policy, tokens[chosen], attention[chosen], response[chosen])
            loss = objectives.kto_loss(step_logprob, ref_logprob[chosen], desirable[chosen], z_ref, config.beta,
                                       config.desirable_weight, config.undesirable_weight)
            optimizer_step(policy, optimizer, loss, config.max_grad_norm)

    policy.eval()
    trajectory = pd.DataFrame(rows)
    return AlignmentRun(trajectory, checkpoints, select_dpo(trajectory))


def train_kto_runs(policies: Sequence[HFLanguageModel], reference: HFLanguageModel | Sequence[HFLanguageModel],
                   oracle: RewardOracle, config: KTOConfig, *, seeds: Sequence[int], progress: bool = True,
                   on_eval=None) -> list[AlignmentRun]:
    """`train_kto` for R same-shaped policies at once (policy r with `seeds[r]`) as one `BatchedLlama`, as
    `dpo.train_dpo_runs` batches DPO; run r equals `train_kto(policies[r], ..., seed=seeds[r])` to float32 rounding:
    its own median labels, its own reference point z_ref, its own mini-batches, and it sits out an iteration with
    no labelled response as it does alone."""
    if not isinstance(config, KTOConfig):
        raise TypeError(f"config must be a KTOConfig, got {type(config).__name__}")
    device, models, runs, optimizer, references = start_runs(policies, reference, config, seeds)
    first, R = policies[0], len(policies)
    shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
    rows: list[list[dict]] = [[] for _ in models]
    checkpoints: list[dict] = [{} for _ in models]

    for iteration in tqdm(range(config.n_iterations + 1), desc=f"KTO ×{R}", disable=not progress):
        batch = rollout_runs(runs, oracle, config.batch_size, config, prompt_ids=first.prompt_ids, eos_id=first.eos_id,
                             pad_id=first.pad_id, seeds=seeds, iteration=iteration, device=device)
        labels = [label_by_median(batch.reward[r]) for r in range(R)]  # (desirable, labelled) per run, CPU
        with torch.no_grad(), autocast(device, config.bf16):
            ref_logprob = references.response_logprobs(batch.tokens, batch.attention, batch.response)
            logprob = runs.response_logprobs(batch.tokens, batch.attention, batch.response)
        z_ref = objectives.kto_reference_point(logprob, ref_logprob, dim=-1)  # [R]

        if iteration % config.eval_every == 0 or iteration == config.n_iterations:
            for r, (desirable, labelled) in enumerate(labels):
                rows[r].append(kto_row(iteration, batch.run(r), logprob[r], ref_logprob[r], z_ref[r], desirable,
                                       labelled, config.beta))
            keep_runs(iteration, runs, models, checkpoints, on_eval)
        if iteration == config.n_iterations:
            break
        labelled = [labelled.nonzero()[:, 0] for _, labelled in labels]
        active = torch.tensor([len(items) > 0 for items in labelled])
        if not active.any():
            continue  # every response of every run at its median: nothing to learn from this batch

        examples = padded(labelled, device)
        desirable = torch.stack([d for d, _ in labels]).to(device)
        for index, weight in run_minibatches([len(items) for items in labelled], config.examples_per_step,
                                             config.grad_steps, shuffles, device):
            chosen = examples.gather(1, index)
            with autocast(device, config.bf16):
                step_logprob = runs.response_logprobs(*gather_rows(batch, chosen))
            loss = objectives.kto_loss(step_logprob, ref_logprob.gather(1, chosen), desirable.gather(1, chosen),
                                       z_ref[:, None], config.beta, config.desirable_weight, config.undesirable_weight)
            batched_step(optimizer, weighted_mean(loss, weight), config.max_grad_norm, active=active)

    finish_runs(runs, models)
    trajectories = [pd.DataFrame(r) for r in rows]
    return [AlignmentRun(t, c, select_dpo(t)) for t, c in zip(trajectories, checkpoints)]
