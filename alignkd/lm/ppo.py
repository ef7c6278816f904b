"""PPO against a fixed reference, with a value head and per-token KL shaping (paper §3.1, App. C.3).

    run = train_ppo(policy, reference, oracle, PPOConfig(), seed=0)   # policy, reference: HFLanguageModel
    run.trajectory, run.checkpoints, run.selected_step     # see alignkd.lm.training

TRL 1.16 no longer ships PPO, so this is ours, in the shape of the TRL 0.9.6 `PPOTrainer` the paper
used (App. C.3: `AutoModelForCausalLMWithValueHead`, lr 1e-5, β 0.7, batch 64, mini-batch 8, 1 epoch).
One iteration:

1. sample `batch_size` responses from the current policy (its prompt, τ = 1, no top-k/top-p);
2. score them: folded oracle reward R (App. C.3), old log-probs and values, reference log-probs;
3. per-token rewards. `kl_form = "reward"` (the paper's PPO, eq. 3): r_t = −β·(log π_old − log π_ref)_t
   at every response token, plus R at the last one; the optimum of this objective is
   π ∝ π_ref·exp(R/β) (exact reverse KL). `kl_form = "k3"`: r_t = R at the last token only, and
   β·k3 (k3 = e^{ref−θ} − (ref−θ) − 1, per token) is added to the loss as GRPO does; SPEC §4 found
   this behaves like a forward KL, whose optimum depends much less on the reference's mass;
4. advantages by GAE (γ, λ), whitened over the batch's response tokens; returns = A + V_old;
5. `num_ppo_epochs` passes over shuffled mini-batches: clipped-ratio policy loss + vf_coef · clipped
   value loss (+ β·k3), token-averaged.

Value head: a linear layer on the policy's last hidden state, sharing the trunk, as
`AutoModelForCausalLMWithValueHead` does in the paper's setup. A separate critic would double the
forward/backward cost and the memory (a second 360M model at paper scale) and would not be the
paper's method; the cost of sharing is that the value loss also moves the policy's trunk, which
`vf_coef` = 0.1 (TRL's default) keeps small. The head is zero-initialised (V ≡ 0 at the start), so
a run is a deterministic function of the policy, the seed and the config.

The KL coefficient is fixed (TRL 0.9.6 adapted it by default; the paper's analysis, §3.3, and its
β sweeps assume a fixed β).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import objectives
from ..validation import require_choice, require_int, require_positive
from .generation import Samples, sample, token_logprobs
from .models import HFLanguageModel
from .reward import RewardOracle
from .device import autocast, resolve_device
from .selection import select_ppo
from .training import (AlignmentRun, RunConfig, UpdatePass, finish_runs, iteration_seed, keep_runs, rollout_runs,
                       snapshot, start_runs)

KL_FORMS = ("reward", "k3")


@dataclass
class PPOConfig(RunConfig):
    n_iterations: int = 300
    """Rollout-and-update iterations (the paper's PPO trajectories, App. Fig. 13, run a few hundred)."""
    batch_size: int = 64
    """Responses sampled per iteration (App. C.3: PPO batch size 64)."""
    mini_batch_size: int = 8
    """Responses per gradient step (App. C.3: mini-batch 8, so batch_size / mini_batch_size steps per epoch)."""
    num_ppo_epochs: int = 1
    """Passes over each batch (App. C.3: 1 PPO epoch per batch)."""
    learning_rate: float = 1e-5
    """Adam learning rate (App. C.3)."""
    beta: float = 0.7
    """KL coefficient β of the anchor to the reference (App. C.3: 0.7)."""
    kl_form: str = "reward"
    """"reward": −β·log(π/π_ref) per token in the shaped reward (paper eq. 3, reverse KL);
    "k3": β·k3 per token in the loss (GRPO-style; SPEC §4 probe)."""
    max_new_tokens: int = 128
    """Response length cap (App. C.3: max_length 128)."""
    epsilon: float = 0.2
    """PPO ratio clip ε (TRL 0.9.6's `cliprange` default, the version App. C.3 used)."""
    epsilon_value: float = 0.2
    """Value clip around the old values (TRL 0.9.6's `cliprange_value` default)."""
    vf_coef: float = 0.1
    """Weight of the value loss (TRL 0.9.6 default)."""
    gamma: float = 1.0
    """Discount (TRL 0.9.6 default: undiscounted episodes)."""
    lam: float = 0.95
    """GAE λ (TRL 0.9.6 default); λ = 1 gives Monte-Carlo returns minus the value baseline."""
    whiten_advantages: bool = True
    """Normalise advantages over the batch's response tokens (TRL 0.9.6 does)."""

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "n_iterations", "batch_size", "mini_batch_size", "num_ppo_epochs", "max_new_tokens")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(f"PPOConfig.mini_batch_size = {self.mini_batch_size} must divide batch_size = {self.batch_size}")
        require_positive(self, "learning_rate", "beta", "epsilon", "epsilon_value")
        require_choice(self, "kl_form", KL_FORMS)
        if not self.vf_coef >= 0:
            raise ValueError(f"PPOConfig.vf_coef = {self.vf_coef!r}: must be >= 0")
        if not (0 < self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"PPOConfig.gamma = {self.gamma!r} must be in (0, 1], lam = {self.lam!r} in [0, 1]")

    def reference_anchor(self) -> str:
        return ("reverse KL in the reward, per token" if self.kl_form == "reward"
                else "k3 penalty per token (forward-KL-like gradient)")

    def update_passes(self) -> list[UpdatePass]:
        """Old log-probs and values of every batch, then `num_ppo_epochs` passes of mini-batches."""
        n, batch = self.n_iterations, self.batch_size
        return [UpdatePass("score", (n + 1) * batch, batch),
                UpdatePass("train", n * batch, self.mini_batch_size, epochs=self.num_ppo_epochs)]


class ValueHead(torch.nn.Module):
    """V(s_t) = w·h_t + b on the policy's last hidden state h_t (zero-initialised)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float())[..., 0]


# ---------------------------------------------------------------------------------------------
# The sequence pieces of PPO, on per-token tensors of shape [B, T] with a 0/1 response mask (the
# objectives themselves are alignkd.objectives).

def shaped_rewards(score: torch.Tensor, logprob: torch.Tensor, ref_logprob: torch.Tensor, mask: torch.Tensor,
                   beta: float, kl_form: str) -> torch.Tensor:
    """Per-token rewards [B, T]: the sequence score R at each sequence's last response token, and for
    kl_form "reward" also −β·(log π − log π_ref) at every response token (eq. 3, per token)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask.bool(), positions, -1).max(1).values
    rewards = torch.zeros_like(logprob)
    if kl_form == "reward":
        rewards = objectives.shaped_reward(rewards, logprob, ref_logprob, beta) * mask
    return rewards.scatter_add(1, last[:, None], score[:, None].to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over each response; returns (advantages, returns), both [B, T].

    Positions outside the response have value and reward 0, so the value after the last response
    token is 0 (the episode ends there)."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


# ---------------------------------------------------------------------------------------------

def policy_logprobs_and_values(policy, value_head, tokens, mask):
    """Per-token log π(x_t | x_<t) and V(x_<t), both [B, T-1], from one forward pass; 0 off `mask[:, 1:]`."""
    out = policy(input_ids=tokens, attention_mask=mask.long(), output_hidden_states=True)
    logits = out.logits[:, :-1].float()
    logprob = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None])[..., 0]
    logprob = torch.where(mask[:, 1:].bool(), logprob, torch.zeros((), dtype=logprob.dtype, device=logprob.device))
    return logprob, value_head(out.hidden_states[-1][:, :-1])


def rollout_row(iteration: int, reward: torch.Tensor, nll: torch.Tensor, logprob, ref_logprob, mask) -> dict:
    """One trajectory row from a batch of samples of the policy."""
    return {
        "iteration": iteration,
        "reward_mean": float(reward.mean()),
        "reward_std": float(reward.std()),
        "nll_mean": float(nll.mean()),
        "kl": float(((logprob - ref_logprob) * mask).sum(1).mean()),
    }


def train_ppo(policy: HFLanguageModel, reference: HFLanguageModel, oracle: RewardOracle, config: PPOConfig, *,
              seed: int, progress: bool = True, on_eval=None) -> AlignmentRun:
    """Align `policy` to `oracle` with PPO anchored to the frozen `reference`.

    `policy.model` is trained in place (samples start from `policy.prompt_ids`, end at its EOS);
    `reference.model` is frozen. Returns the trajectory (one row per evaluation step, from that
    step's rollout batch, before its update), the checkpoints (CPU state_dicts, or
    `on_eval(step, policy.model)` results) and the step chosen by `select_ppo` (App. C.4).
    """
    if not isinstance(config, PPOConfig):
        raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    prompt_ids, eos_id, pad_id = policy.prompt_ids, policy.eos_id, policy.pad_id
    policy, reference = policy.model, reference.model
    policy.to(device)
    reference.to(device).eval().requires_grad_(False)
    torch.manual_seed(seed)
    value_head = ValueHead(policy.config.hidden_size).to(device)
    optimizer = torch.optim.Adam([*policy.parameters(), *value_head.parameters()], lr=config.learning_rate,
                                 foreach=True)  # batched over tensors, the per-tensor loop's numbers (kd.py)
    shuffle = torch.Generator().manual_seed(seed)
    rows, checkpoints = [], {}

    for iteration in tqdm(range(config.n_iterations + 1), desc="PPO", disable=not progress):
        with autocast(device, config.bf16):  # rollouts in the training precision
            samples: Samples = sample(policy, prompt_ids, config.batch_size, config.max_new_tokens, config.tau,
                                      eos_id=eos_id, pad_id=pad_id, batch_size=config.batch_size,
                                      seed=iteration_seed(seed, iteration)).to(device)
        tokens, attention, mask = samples.tokens, samples.mask, samples.response_mask[:, 1:].float()
        nll = oracle.nll(samples)
        score = oracle.reward_from_nll(nll)
        policy.eval()
        with torch.no_grad(), autocast(device, config.bf16):
            old_logprob, old_values = policy_logprobs_and_values(policy, value_head, tokens, attention)
            ref_logprob = token_logprobs(reference, tokens, attention)
        old_logprob, old_values, ref_logprob = old_logprob.float(), old_values.float(), ref_logprob.float()

        if iteration % config.eval_every == 0 or iteration == config.n_iterations:
            rows.append(rollout_row(iteration, score, nll, old_logprob, ref_logprob, mask))
            checkpoints[iteration] = snapshot(iteration, policy, on_eval)
        if iteration == config.n_iterations:
            break  # the last rollout only evaluates the final policy

        rewards = shaped_rewards(score.to(device), old_logprob, ref_logprob, mask, config.beta, config.kl_form)
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = objectives.whiten(advantages, mask)

        policy.train()
        for _ in range(config.num_ppo_epochs):
            order = torch.randperm(config.batch_size, generator=shuffle).to(device)
            for start in range(0, config.batch_size, config.mini_batch_size):
                rows_mb = order[start:start + config.mini_batch_size]
                with autocast(device, config.bf16):
                    logprob, values = policy_logprobs_and_values(policy, value_head, tokens[rows_mb], attention[rows_mb])
                logprob, values = logprob.float(), values.float()
                # TRL 0.9.6's PPOTrainer.loss: token-averaged clipped policy loss and clipped value loss
                policy_loss = objectives.masked_mean(objectives.policy_loss(
                    logprob, old_logprob[rows_mb], advantages[rows_mb], config.epsilon), mask[rows_mb])
                value_loss = objectives.masked_mean(objectives.value_loss(
                    values, returns[rows_mb], old_values[rows_mb], config.epsilon_value), mask[rows_mb])
                loss = policy_loss + config.vf_coef * value_loss
                if config.kl_form == "k3":
                    loss = loss + config.beta * objectives.masked_mean(objectives.k3(logprob, ref_logprob[rows_mb]),
                                                                       mask[rows_mb])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_([*policy.parameters(), *value_head.parameters()], config.max_grad_norm)
                optimizer.step()

    policy.eval()
    trajectory = pd.DataFrame(rows)
    return AlignmentRun(trajectory, checkpoints, select_ppo(trajectory))


def train_ppo_runs(policies: Sequence[HFLanguageModel], reference: HFLanguageModel | Sequence[HFLanguageModel],
                   oracle: RewardOracle, config: PPOConfig, *, seeds: Sequence[int], progress: bool = True,
                   on_eval=None) -> list[AlignmentRun]:
    """`train_ppo` for R same-shaped policies at once (policy r with `seeds[r]`) as one `BatchedLlama` with R value
    heads stacked beside it; run r equals `train_ppo(policies[r], ..., seed=seeds[r])` to float32 rounding
    (`grpo.train_grpo_runs` says how): its own rollouts, GAE and whitening, its own mini-batch order, its own
    gradient-norm clip over policy and value head, and its own Adam."""
    from .batched import RunAdam, linear
    from .batched import optimizer_step as batched_step

    if not isinstance(config, PPOConfig):
        raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}")
    device, models, runs, _, references = start_runs(policies, reference, config, seeds)
    first, R, B = policies[0], len(policies), config.batch_size
    hidden = models[0].config.hidden_size
    value_weight = torch.zeros(R, 1, hidden, device=device, requires_grad=True)  # ValueHead: zero-initialised
    value_bias = torch.zeros(R, 1, device=device, requires_grad=True)
    optimizer = RunAdam([*runs.parameters(), value_weight, value_bias], lr=config.learning_rate)
    shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
    rows: list[list[dict]] = [[] for _ in models]
    checkpoints: list[dict] = [{} for _ in models]

    def logprobs_and_values(tokens, attention):  # `policy_logprobs_and_values`, [R, N, T-1] each
        with autocast(device, config.bf16):
            logprob, states = runs.token_logprobs(tokens, attention, hidden=True)
        values = linear(states.float(), value_weight)[..., 0] + value_bias.view(R, 1, 1)
        return logprob.float(), values.float()

    for iteration in tqdm(range(config.n_iterations + 1), desc=f"PPO ×{R}", disable=not progress):
        batch = rollout_runs(runs, oracle, B, config, prompt_ids=first.prompt_ids, eos_id=first.eos_id,
                             pad_id=first.pad_id, seeds=seeds, iteration=iteration, device=device)
        score, mask = batch.reward.to(device), batch.response
        with torch.no_grad():
            old_logprob, old_values = logprobs_and_values(batch.tokens, batch.attention)
            with autocast(device, config.bf16):
                ref_logprob = references.token_logprobs(batch.tokens, batch.attention)

        if iteration % config.eval_every == 0 or iteration == config.n_iterations:
            for r in range(R):
                rows[r].append(rollout_row(iteration, score[r], batch.nll[r], old_logprob[r], ref_logprob[r], mask[r]))
            keep_runs(iteration, runs, models, checkpoints, on_eval)
        if iteration == config.n_iterations:
            break  # the last rollout only evaluates the final policy

        rewards = shaped_rewards(score.flatten(), old_logprob.flatten(0, 1), ref_logprob.flatten(0, 1),
                                 mask.flatten(0, 1), config.beta, config.kl_form)
        advantages, returns = (x.view(R, B, -1) for x in gae(rewards, old_values.flatten(0, 1), mask.flatten(0, 1),
                                                              config.gamma, config.lam))
        if config.whiten_advantages:  # over each run's batch
            advantages = objectives.whiten(advantages.flatten(1), mask.flatten(1), dim=-1).view_as(advantages)

        for _ in range(config.num_ppo_epochs):
            orders = torch.stack([torch.randperm(B, generator=shuffle) for shuffle in shuffles]).to(device)
            for start in range(0, B, config.mini_batch_size):
                index = orders[:, start:start + config.mini_batch_size]

                def pick(x: torch.Tensor, index=index) -> torch.Tensor:
                    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))

                logprob, values = logprobs_and_values(pick(batch.tokens), pick(batch.attention))
                m = pick(mask)
                per_run = lambda x: objectives.masked_mean(x, m, dim=(1, 2))  # noqa: E731  TRL's token average
                loss = (per_run(objectives.policy_loss(logprob, pick(old_logprob), pick(advantages), config.epsilon))
                        + config.vf_coef * per_run(objectives.value_loss(values, pick(returns), pick(old_values),
                                                                         config.epsilon_value)))
                if config.kl_form == "k3":
                    loss = loss + config.beta * per_run(objectives.k3(logprob, pick(ref_logprob)))
                batched_step(optimizer, loss, config.max_grad_norm)

    finish_runs(runs, models)
    trajectories = [pd.DataFrame(r) for r in rows]
    return [AlignmentRun(t, c, select_ppo(t)) for t, c in zip(trajectories, checkpoints)]
