"""What the LLM alignment trainers (`train_ppo`, `train_dpo`, `train_grpo`, `train_kto`, `train_simpo`) share.

    run = train_ppo(policy, reference, oracle, PPOConfig(), seed=0)   # an AlignmentRun
    run.trajectory                          # DataFrame, one row per evaluation step
    run.checkpoints[step]                   # CPU state_dict (or what on_eval returned) at that step
    run.selected_step                       # chosen by the App. C.4 rule (`alignkd.lm.selection`)

`RunConfig` holds the fields every alignment config shares (rollout temperature, gradient
clipping, evaluation cadence, hardware); every algorithm's config (`PPOConfig`, `DPOConfig`, `GRPOConfig`,
`KTOConfig`, `SimPOConfig`) extends it. Each trainer adds its own columns (its module docstring lists them).

Trajectory columns (all runs): `iteration` (number of optimiser iterations done before the row's
samples were drawn; 0 is the initial policy), `reward_mean`, `reward_std` (folded oracle reward of
the policy's samples), `nll_mean` (per-token NLL under p_target), `kl` (mean over samples of the
sequence log-ratio Σ_t log π/π_ref, an unbiased estimate of KL(π ‖ π_ref)). DPO adds the four
App. C.4 / Fig. 14 quantities as TRL's DPOTrainer logs them (implicit rewards β·log π/π_ref summed
over response tokens, on the iteration's freshly generated pairs): `chosen_reward`,
`rejected_reward`, `margin`, `accuracy`; and the oracle's view of the same pairs:
`chosen_oracle_reward`, `rejected_oracle_reward`, `n_pairs` (untied pairs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd
import torch

from ..validation import require_int, require_positive
from .device import autocast, check_device, resolve_device
from .generation import sample, token_logprobs


@dataclass
class AlignmentRun:
    """What `train_ppo`, `train_dpo` and `train_grpo` return.

    trajectory: one row per evaluation step (columns in the module docstring).
    checkpoints: evaluation step -> CPU copy of the policy state_dict, or whatever the caller's
        `on_eval(step, policy)` returned at that step.
    selected_step: the iteration chosen by the algorithm's App. C.4 rule.
    """

    trajectory: pd.DataFrame
    checkpoints: dict[int, Any] = field(default_factory=dict)
    selected_step: int = 0

    @property
    def selected(self) -> Any:
        """The checkpoint (or on_eval result) at the selected step."""
        return self.checkpoints[self.selected_step]

    @property
    def final_step(self) -> int:
        return int(self.trajectory["iteration"].iloc[-1])


def snapshot(step: int, policy, on_eval) -> Any:
    """What a run keeps at an evaluation step: on_eval(step, policy) if given, else a CPU state_dict copy."""
    if on_eval is not None:
        return on_eval(step, policy)
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in policy.state_dict().items()}


def iteration_seed(seed: int, iteration: int) -> int:
    """Sampling seed of one iteration: distinct per (seed, iteration), identical across runs."""
    return (seed * 1_000_003 + iteration) % (2**63 - 1)


@dataclass(frozen=True)
class UpdatePass:
    """A pass over the policy that an algorithm's update adds to every algorithm's rollout (sampling `batch_size`
    responses per iteration, scoring them under the oracle and the reference): what the cost model counts."""

    kind: str
    """`score` (a forward pass without gradients) or `train` (forward, backward and an optimiser step)."""
    sequences: int
    """Sequences passed over in a whole run."""
    per_call: int
    """Sequences per call (a batch, a mini-batch)."""
    epochs: float = 1.0
    """Passes over each of those sequences."""


@dataclass
class RunConfig:
    """The fields every LLM alignment config shares (App. C.3 for the values)."""

    tau: float = 1.0
    """Sampling temperature τ of the rollouts (App. C.3: τ = 1.0); no top-k, no top-p."""
    max_grad_norm: float = 0.0
    """Clip the gradient norm at this value; 0 = no clipping (TRL 0.9.6's default)."""
    eval_every: int = 10
    """Record a trajectory row and a checkpoint every this many iterations (and at 0 and the end).
    Without `on_eval` each checkpoint is a CPU copy of the state_dict (≈ 0.5 GB at SmolLM2-135M in
    fp32): at the paper's scale pass an `on_eval` that writes to disk, or evaluate less often."""
    device: str = "auto"
    """"auto" (CUDA if present), "cpu", "cuda" or "cuda:N"."""
    bf16: bool = False
    """bf16 autocast for forward passes (the paper trains in bf16); needs a CUDA GPU."""

    def __post_init__(self):
        require_positive(self, "tau")
        require_int(self, "eval_every")
        if not self.max_grad_norm >= 0:
            raise ValueError(f"{type(self).__name__}.max_grad_norm = {self.max_grad_norm!r}: must be >= 0")
        check_device(self.device, self.bf16, type(self).__name__)

    @property
    def evaluations(self) -> int:
        """Iterations with a trajectory row: 0, every `eval_every`, and the last."""
        n = self.n_iterations
        return n // self.eval_every + 1 + (n % self.eval_every > 0)

    def reference_anchor(self) -> str:
        """How the update holds the policy to its reference, in a few words (chapter 06 reads the alignment budget
        by it: a reverse KL in the reward punishes every move towards what the reference lacks)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it anchors to its reference "
                                  "(reference_anchor)")

    def update_passes(self) -> list[UpdatePass]:
        """The passes this algorithm's update makes beyond the shared rollout (each algorithm says its own)."""
        raise NotImplementedError(f"{type(self).__name__} does not say what its update computes (update_passes)")


# --------------------------------------------------------------------------- the pieces of an on-policy iteration

class Rollout(NamedTuple):
    """One iteration's responses of the current policy, scored by the oracle (per-response `nll`, `reward`)."""

    tokens: torch.Tensor
    attention: torch.Tensor
    response: torch.Tensor
    """[B, T-1] float mask of the response tokens among the predicted positions (the prompt masked)."""
    nll: torch.Tensor
    reward: torch.Tensor


def rollout(policy, oracle, n: int, config: RunConfig, *, prompt_ids, eos_id: int, pad_id: int, seed: int,
            iteration: int, device) -> Rollout:
    """`n` responses of `policy` at the config's temperature and length, sampled in the training precision with the
    iteration's own seed, and the oracle's NLL and reward of each."""
    with autocast(device, config.bf16):
        samples = sample(policy, prompt_ids, n, config.max_new_tokens, config.tau, eos_id=eos_id, pad_id=pad_id,
                         batch_size=n, seed=iteration_seed(seed, iteration)).to(device)
    nll = oracle.nll(samples)
    return Rollout(samples.tokens, samples.mask, samples.response_mask[:, 1:].float(), nll,
                   oracle.reward_from_nll(nll))


def minibatches(n: int, size: int, steps: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """`steps` mini-batches of indices into range(n), `size` at a time, in passes over a fresh permutation (the
    last mini-batch of a pass may be smaller)."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) == 0:
            order = torch.randperm(n, generator=generator)
        batch, order = order[:size].to(device), order[size:]
        yield batch


def optimizer_step(policy, optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float) -> None:
    """One step on the mean of a per-example loss, its gradient norm clipped at `max_grad_norm` (0: not clipped)."""
    optimizer.zero_grad(set_to_none=True)
    loss.mean().backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()


def pair_row(iteration: int, batch: Rollout, logprob: torch.Tensor, ref_logprob: torch.Tensor,
             chosen_reward: torch.Tensor, rejected_reward: torch.Tensor, chosen: torch.Tensor,
             rejected: torch.Tensor) -> dict:
    """The trajectory row of a pairwise method (DPO, SimPO): TRL's implicit-reward series on the iteration's
    pairs and the oracle's view of the same pairs (columns in the module docstring)."""
    return {
        "iteration": iteration,
        "reward_mean": float(batch.reward.mean()),
        "reward_std": float(batch.reward.std()),
        "nll_mean": float(batch.nll.mean()),
        "kl": float((logprob - ref_logprob).mean()),
        "chosen_reward": float(chosen_reward.mean()),
        "rejected_reward": float(rejected_reward.mean()),
        "margin": float((chosen_reward - rejected_reward).mean()),
        "accuracy": float((chosen_reward > rejected_reward).float().mean()),
        "chosen_oracle_reward": float(batch.reward[chosen.cpu()].mean()),
        "rejected_oracle_reward": float(batch.reward[rejected.cpu()].mean()),
        "n_pairs": int(len(chosen)),
    }


# --------------------------------------------------------------------------- the same pieces for R runs at once
# (`train_*_runs`: the seeds of one algorithm as one `batched.BatchedLlama`, each run equal to its run alone)


class RunsRollout(NamedTuple):
    """One iteration's responses of R policies, [R, B, ...] (`Rollout` per run: `run(r)`)."""

    tokens: torch.Tensor
    attention: torch.Tensor
    response: torch.Tensor
    nll: torch.Tensor
    reward: torch.Tensor

    def run(self, r: int) -> Rollout:
        return Rollout(self.tokens[r], self.attention[r], self.response[r], self.nll[r], self.reward[r])

    def flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens, attention, response with the runs as rows (R·B), e.g. for the shared frozen reference."""
        return self.tokens.flatten(0, 1), self.attention.flatten(0, 1), self.response.flatten(0, 1)


def rollout_runs(runs, oracle, n: int, config: RunConfig, *, prompt_ids, eos_id: int, pad_id: int,
                 seeds, iteration: int, device) -> RunsRollout:
    """`rollout` for each run of `runs` (a `BatchedLlama`), run r with `seeds[r]`: the same responses, in one pass."""
    from .batched import stack_samples

    with autocast(device, config.bf16):
        per_run = runs.sample(prompt_ids, n, config.max_new_tokens, config.tau, eos_id=eos_id, pad_id=pad_id,
                              seeds=[iteration_seed(seed, iteration) for seed in seeds])
    samples = stack_samples(per_run, pad_id).to(device)
    nll = oracle.nll(samples)
    R = len(seeds)
    return RunsRollout(samples.tokens.view(R, n, -1), samples.mask.view(R, n, -1),
                       samples.response_mask[:, 1:].float().view(R, n, -1), nll.view(R, n),
                       oracle.reward_from_nll(nll).view(R, n))


def start_runs(policies, reference, config: RunConfig, seeds) -> tuple:
    """What every `train_*_runs` starts from: (device, the policies' models on it, their `BatchedLlama`, its
    `RunAdam` at the config's learning rate, the runs' `RunReferences`). `reference`: one frozen model every run
    is anchored to, or one per run (the same shape), e.g. the K-A references of a coverage sweep."""
    from .batched import BatchedLlama, RunAdam

    if len(policies) != len(seeds) or not policies:
        raise ValueError(f"{len(policies)} policies for {len(seeds)} seeds: one seed per policy, at least one")
    device = resolve_device(config.device)
    models = [policy.model.to(device) for policy in policies]
    runs = BatchedLlama.from_models(models, suppress_ids=policies[0].suppress_ids)
    return device, models, runs, RunAdam(runs.parameters(), lr=config.learning_rate), \
        RunReferences(reference, len(policies), device)


class RunReferences:
    """Each run's frozen reference, scored for R runs at once: one model that every run shares (through
    transformers, the runs' responses as rows of one batch), or one model per run, stacked as one frozen
    `BatchedLlama` so that run r is scored by its own reference (equal to it alone, to float32 rounding)."""

    def __init__(self, reference, runs: int, device):
        from .batched import BatchedLlama

        references = list(reference) if isinstance(reference, (list, tuple)) else [reference]
        if len(references) not in (1, runs):
            raise ValueError(f"{len(references)} references for {runs} runs: give one, or one per run")
        for model in {id(r.model): r.model for r in references}.values():
            model.to(device).eval().requires_grad_(False)
        self.runs = runs
        self.shared = references[0].model if all(r.model is references[0].model for r in references) else None
        self.stacked = None
        if self.shared is None:
            self.stacked = BatchedLlama.from_models([r.model for r in references],
                                                    suppress_ids=references[0].suppress_ids)
            for tensor in self.stacked.parameters():
                tensor.requires_grad_(False)

    @torch.no_grad()
    def token_logprobs(self, tokens: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """[R, B, T-1] float32 log-probs of tokens [R, B, T] under each run's reference (`token_logprobs`)."""
        if self.stacked is not None:
            return self.stacked.token_logprobs(tokens, attention).float()
        R, B = tokens.shape[:2]
        return token_logprobs(self.shared, tokens.flatten(0, 1), attention.flatten(0, 1)).float().view(R, B, -1)

    def response_logprobs(self, tokens: torch.Tensor, attention: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """[R, B] summed log-prob of each response under its run's reference (`dpo.response_logprobs`)."""
        logprob = self.token_logprobs(tokens, attention)
        return torch.where(response.bool(), logprob, torch.zeros((), device=logprob.device)).sum(-1)


def keep_runs(step: int, runs, models, checkpoints: list[dict], on_eval) -> None:
    """`snapshot` of every run at an evaluation step, through its own `LlamaForCausalLM` (given its weights)."""
    for r, model in enumerate(models):
        model.load_state_dict(runs.state_dict(r))
        checkpoints[r][step] = snapshot(step, model, on_eval)


def finish_runs(runs, models) -> None:
    """Each run's final weights into its model, in eval mode."""
    runs.load_into(models)
    for model in models:
        model.eval()


def run_minibatches(counts, size: int, steps: int, shuffles, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per run r, the `minibatches(counts[r], size, steps, shuffles[r])` that run draws alone (none when
    counts[r] is 0: alone it skips the iteration, its shuffle untouched), as `steps` pairs (index [R, size] into
    each run's items, weight [R, size]: 1 for a drawn item, 0 for the padding of a short or empty mini-batch)."""
    schedules = [list(minibatches(count, size, steps, shuffle, "cpu")) if count else []
                 for count, shuffle in zip(counts, shuffles)]
    for step in range(steps):
        index = torch.zeros(len(schedules), size, dtype=torch.long)
        weight = torch.zeros(len(schedules), size)
        for r, schedule in enumerate(schedules):
            if schedule:
                drawn = schedule[step]
                index[r, :len(drawn)], weight[r, :len(drawn)] = drawn, 1.0
        yield index.to(device), weight.to(device)


def pair_minibatches(pairs, size: int, steps: int, shuffles, device
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`run_minibatches` over each run's untied pairs (`pairs[r]` = (chosen, rejected) response indices), as
    (chosen [R, size], rejected [R, size], weight [R, size]): DPO's and SimPO's mini-batches, per run."""
    chosen, rejected = padded([c for c, _ in pairs], device), padded([r for _, r in pairs], device)
    for index, weight in run_minibatches([len(c) for c, _ in pairs], size, steps, shuffles, device):
        yield chosen.gather(1, index), rejected.gather(1, index), weight


def padded(lists, device) -> torch.Tensor:
    """Per-run index tensors of different lengths as one [R, max length] tensor (padded with 0)."""
    width = max(1, max(len(items) for items in lists))
    out = torch.zeros(len(lists), width, dtype=torch.long)
    for r, items in enumerate(lists):
        out[r, :len(items)] = items.cpu()
    return out.to(device)


def gather_rows(batch: RunsRollout, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens, attention, response of the responses `index` [R, N] of each run: [R, N, ...]."""
    def pick(x: torch.Tensor) -> torch.Tensor:
        return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))
    return pick(batch.tokens), pick(batch.attention), pick(batch.response)


def weighted_mean(loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """[R]: each run's mean loss over its drawn items (weight 1), as `optimizer_step` averages one run's."""
    return (loss * weight).sum(-1) / weight.sum(-1).clamp(min=1)
