"""GRPO against a fixed reference: critic-free, batch-mean baseline, KL to π_ref (paper App. A, B.1).

    run = train_grpo(policy, reference, oracle, GRPOConfig(), seed=0)   # policy, reference: HFLanguageModel
    run = train_grpo(..., GRPOConfig(backend="trl"), seed=0)          # through trl.GRPOTrainer

Every response starts from the same prompt, so the whole batch of `batch_size` responses is
one GRPO group and the group-mean baseline is the paper's batch-mean baseline (App. A: "advantage =
reward − batch-mean reward"; hence `scale_rewards = "none"`, no division by the std).

Two KL forms (SPEC §4 found they change the mechanism, so both are named and reported):
- `kl_form = "k3"` (GRPO as published, DeepSeekMath; TRL's with `use_bias_correction_kl = False`): A_i = R_i − mean R, and β·k3 per
  token is added to the loss, k3 = e^{ref−θ} − (ref−θ) − 1. Its gradient pulls like a forward KL,
  whose optimum depends much less on how little mass π_ref puts on the target.
- `kl_form = "reward"`: the KL is folded into the sequence reward, R'_i = R_i − β·Σ_t log π/π_ref,
  A_i = R'_i − mean R'. This is REINFORCE on the exact reverse-KL objective E[R] − β·KL(π ‖ π_ref),
  whose optimum is π ∝ π_ref·e^{R/β}: the paper's trap (§3.3) in its purest form.
Per-token losses are summed and divided by batch_size × max_new_tokens (TRL's
"dr_grpo" aggregation), so a response's log-prob enters with its full sum, as the objective asks.

Backends. `backend = "trl"` runs `trl.GRPOTrainer` (TRL 1.16, `trl_trainer`), k3 form only; the
default `backend = "ours"` is the batched loop below, with both forms. On the same batch they take the
same update: tests/test_lm_align_grpo.py hands TRL's trainer a fixed batch of completions (only its
sampler is replaced) and finds its advantages, reference log-probs, loss, every parameter's gradient and
its AdamW step equal to `score_batch` + `batch_loss` + `optimizer_for`'s (μ = 1 and μ = 2, where the
clip binds). Two TRL settings had to be found for that, and `trl_trainer` sets both: (1)
`use_bias_correction_kl = False` — TRL's default multiplies k3 by the ratio ρ, which adds β·k3·∇log π
to the gradient even on-policy (TRL: "the unbiased reverse-KL gradient"), not GRPO's published k3; (2) the suppressed
tokens of the language also as a bias of the output layer (`suppress_in_head`), because TRL's fused LM
head never calls the layer's forward hook. Further fit: GRPOTrainer loads its reference with
`from_pretrained(policy.config._name_or_path)`, so the frozen `reference` is saved to a temporary folder
that the name points to while the trainer is built; TRL tokenises text prompts, so the policy needs a
tokenizer whose encoding of the decoded prompt gives back its `prompt_ids`; TRL scores tokens at the
sampling temperature τ and our loop at 1, the same at the chapter's τ = 1.

The chapter runs "ours": the KL-in-reward form exists only there, and the test pins its k3 to TRL's.
It is also cheaper. `python benchmarks/grpo_backends.py --steps 20` (one thread; shared 2-core machine
at load average ≈ 3.1, CPU seconds ≈ wall seconds): per iteration of 64 responses × ≤ 24 tokens, ours
0.022 s (tiny) and 0.051 s (small), TRL 0.043 s and 0.079 s (×2.0, ×1.6), plus ≈ 0.3 s to start each
trainer (0.5 s for a process's first). At load ≈ 9 every time grows by ≈ 1.4× and the ratios stay.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import objectives
from ..validation import require_choice, require_int, require_positive
from .generation import Samples, sample, token_logprobs
from .models import HFLanguageModel, suppress_tokens
from .ppo import rollout_row
from .reward import RewardOracle
from .device import autocast, resolve_device
from .selection import select_ppo
from .batched import optimizer_step as batched_step
from .training import (AlignmentRun, RunConfig, UpdatePass, finish_runs, iteration_seed, keep_runs, rollout_runs,
                       snapshot, start_runs)

KL_FORMS = ("k3", "reward")
BACKENDS = ("ours", "trl")
SCALE_REWARDS = ("none", "group")


@dataclass
class GRPOConfig(RunConfig):
    """Names follow the glossary of CONTRIBUTING.md (TRL's `trl.GRPOConfig` names in brackets where they
    differ). The paper has no LLM GRPO run; the defaults are its PPO's (App. C.3)."""

    n_iterations: int = 300
    """Generate-and-update iterations (TRL: `max_steps`)."""
    batch_size: int = 64
    """Responses per iteration, one group (TRL: `num_generations`; App. C.3 PPO batch 64; App. A:
    batch-mean baseline)."""
    learning_rate: float = 1e-5
    """Adam learning rate (App. C.3's PPO value)."""
    beta: float = 0.7
    """KL coefficient β (App. C.3's PPO value); must be > 0: the reference anchor is the point."""
    kl_form: str = "k3"
    """"k3": β·k3 per token in the loss (GRPO, TRL); "reward": β·log π/π_ref in the sequence reward."""
    epsilon: float = 0.2
    """Ratio clip ε (TRL default); inactive when num_ppo_epochs = 1 (the ratio is 1)."""
    num_ppo_epochs: int = 1
    """Updates per generated batch, μ (TRL: `num_iterations`, default 1: purely on-policy)."""
    scale_rewards: str = "none"
    """"none": A = R − mean R (App. A); "group": also divide by the group's std (TRL's default)."""
    max_new_tokens: int = 128
    """Response length cap (TRL: `max_completion_length`; App. C.3: max_length 128)."""
    backend: str = "ours"
    """"ours" (batched loop, both KL forms) or "trl" (`trl.GRPOTrainer`, k3 only; needs the policy's tokenizer).
    Both take the same update on the same batch (module docstring)."""

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "n_iterations", "num_ppo_epochs", "max_new_tokens")
        require_int(self, "batch_size", minimum=2)  # a baseline needs a group
        require_positive(self, "learning_rate", "beta", "epsilon")
        require_choice(self, "kl_form", KL_FORMS)
        require_choice(self, "backend", BACKENDS)
        if self.backend == "trl" and self.kl_form != "k3":
            raise ValueError("GRPOConfig.kl_form = 'reward' needs backend = 'ours': trl.GRPOTrainer has only the k3 form")
        require_choice(self, "scale_rewards", SCALE_REWARDS)

    def reference_anchor(self) -> str:
        return ("reverse KL in the sequence reward" if self.kl_form == "reward"
                else "k3 penalty in the loss (forward-KL-like gradient)")

    def update_passes(self) -> list[UpdatePass]:
        """The first update's forward pass is the scoring pass, so only the last iteration scores apart."""
        n, batch = self.n_iterations, self.batch_size
        return [UpdatePass("score", batch, batch), UpdatePass("train", n * batch, batch, epochs=self.num_ppo_epochs)]


def grpo_loss(logprob, old_logprob, ref_logprob, advantages, mask, beta, kl_form, epsilon, max_new_tokens):
    """The GRPO loss on per-token [B, T] tensors (advantages [B]), "dr_grpo" aggregation:
    Σ_{i,t} [−min(ρ A_i, clip(ρ, 1 ± ε) A_i) + β·k3_t (k3 form only)] / (B · max_new_tokens)."""
    per_token = objectives.policy_loss(logprob, old_logprob, advantages[:, None], epsilon)
    if kl_form == "k3":
        per_token = per_token + beta * objectives.k3(logprob, ref_logprob)
    return (per_token * mask).sum() / (mask.shape[0] * max_new_tokens)


class GRPOBatch(NamedTuple):
    """One sampled batch with everything its updates need, fixed before the first update."""

    samples: Samples
    mask: torch.Tensor  # [B, T-1] float: 1 on response tokens (EOS included)
    old_logprob: torch.Tensor  # [B, T-1] log π_old, the policy that drew the samples
    ref_logprob: torch.Tensor  # [B, T-1] log π_ref
    advantages: torch.Tensor  # [B]


def policy_logprobs(policy, samples: Samples, config: GRPOConfig) -> torch.Tensor:
    """log π_θ(y_t | x, y_<t) of every token of `samples`, differentiable, [B, T-1] (zero off the response)."""
    policy.train()
    with autocast(samples.tokens.device, config.bf16):
        return token_logprobs(policy, samples.tokens, samples.mask).float()


def score_batch(policy, reference, samples: Samples, score: torch.Tensor,
                config: GRPOConfig) -> tuple[GRPOBatch, torch.Tensor]:
    """The batch of one iteration (advantages from `score` [B] and `config.kl_form`) and the policy's
    differentiable log-probs on it, which the first update reuses: on-policy, ρ = 1 in value."""
    mask = samples.response_mask[:, 1:].float()
    with torch.no_grad(), autocast(samples.tokens.device, config.bf16):
        ref_logprob = token_logprobs(reference, samples.tokens, samples.mask).float()
    logprob = policy_logprobs(policy, samples, config)
    old_logprob = logprob.detach()
    shaped = score
    if config.kl_form == "reward":  # eq. 3 on whole responses: log π(y) = Σ_t log π(y_t | y_<t)
        shaped = objectives.shaped_reward(score, (old_logprob * mask).sum(1), (ref_logprob * mask).sum(1), config.beta)
    advantages = objectives.group_advantages(shaped, scale=config.scale_rewards == "group")
    return GRPOBatch(samples, mask, old_logprob, ref_logprob, advantages), logprob


def batch_loss(logprob: torch.Tensor, batch: GRPOBatch, config: GRPOConfig) -> torch.Tensor:
    """`grpo_loss` of the policy's log-probs `logprob` on `batch` with `config`'s β, KL form, ε and length cap."""
    return grpo_loss(logprob, batch.old_logprob, batch.ref_logprob, batch.advantages, batch.mask, config.beta,
                     config.kl_form, config.epsilon, config.max_new_tokens)


def optimizer_for(policy, config: GRPOConfig) -> torch.optim.Optimizer:
    """Adam without weight decay: TRL's AdamW with `weight_decay = 0` is the same update."""
    return torch.optim.Adam(policy.parameters(), lr=config.learning_rate)


def train_grpo(policy: HFLanguageModel, reference: HFLanguageModel, oracle: RewardOracle, config: GRPOConfig, *,
               seed: int, progress: bool = True, on_eval=None) -> AlignmentRun:
    """Align `policy.model` with GRPO anchored to the frozen `reference.model`, in place.

    Trajectory rows come from each evaluation step's batch (before its update) for backend "ours",
    and from a separate batch of `batch_size` samples drawn at the step for backend "trl".
    The selected step follows the PPO rule (`select_ppo`: App. C.4 gives none for GRPO; both
    maximise a reward and collapse the same way). Backend "trl" needs `policy.tokenizer`.
    """
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"config must be a GRPOConfig, got {type(config).__name__}")
    if config.backend == "trl":
        return _train_grpo_trl(policy, reference, oracle, config, seed=seed, progress=progress, on_eval=on_eval)
    device = resolve_device(config.device)
    prompt_ids, eos_id, pad_id = policy.prompt_ids, policy.eos_id, policy.pad_id
    policy, reference = policy.model, reference.model
    policy.to(device)
    reference.to(device).eval().requires_grad_(False)
    torch.manual_seed(seed)
    optimizer = optimizer_for(policy, config)
    rows, checkpoints = [], {}

    for step in tqdm(range(config.n_iterations + 1), desc="GRPO", disable=not progress):
        with autocast(device, config.bf16):  # rollouts in the training precision
            samples: Samples = sample(policy, prompt_ids, config.batch_size, config.max_new_tokens,
                                      config.tau, eos_id=eos_id, pad_id=pad_id, batch_size=config.batch_size,
                                      seed=iteration_seed(seed, step)).to(device)
        nll = oracle.nll(samples)
        score = oracle.reward_from_nll(nll).to(device)
        batch, logprob = score_batch(policy, reference, samples, score, config)

        if step % config.eval_every == 0 or step == config.n_iterations:
            rows.append(rollout_row(step, score, nll, batch.old_logprob, batch.ref_logprob, batch.mask))
            checkpoints[step] = snapshot(step, policy, on_eval)
        if step == config.n_iterations:
            break

        for update in range(config.num_ppo_epochs):
            if update > 0:
                logprob = policy_logprobs(policy, samples, config)
            loss = batch_loss(logprob, batch, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()

    policy.eval()
    trajectory = pd.DataFrame(rows)
    return AlignmentRun(trajectory, checkpoints, select_ppo(trajectory))


# ---------------------------------------------------------------------------------------------
# Several seeds at once: the same loop with a leading run dimension (`alignkd.lm.batched`).


def train_grpo_runs(policies: Sequence[HFLanguageModel], reference: HFLanguageModel | Sequence[HFLanguageModel],
                    oracle: RewardOracle, config: GRPOConfig, *, seeds: Sequence[int], progress: bool = True,
                    on_eval=None) -> list[AlignmentRun]:
    """`train_grpo` for R same-shaped policies at once, policy r with `seeds[r]`, all anchored to `reference`:
    the R runs are one `BatchedLlama`, so each iteration samples, scores and updates them in one computation.

    Run r is `train_grpo(policies[r], reference, oracle, config, seed=seeds[r])` to float32 rounding (the
    batched matmuls are other kernels than transformers'; a sampled token differs only at a tie of the two
    largest p/E within rounding, `lm/batched.py`), as `tests/test_lm_batched_align.py` checks. Per run: its own
    sampling seed per iteration, its own group baseline, its own loss, gradient-norm clip and Adam state.
    `on_eval(step, model)` is called per run with that run's `LlamaForCausalLM` (its weights at the step);
    each policy's model holds its final weights on return. Backend "ours" only."""
    if not isinstance(config, GRPOConfig) or config.backend != "ours":
        raise ValueError("train_grpo_runs needs a GRPOConfig with backend = 'ours' (the batched loop)")
    device, models, runs, optimizer, references = start_runs(policies, reference, config, seeds)
    first = policies[0]
    R, B = len(models), config.batch_size
    rows: list[list[dict]] = [[] for _ in models]
    checkpoints: list[dict] = [{} for _ in models]

    for step in tqdm(range(config.n_iterations + 1), desc=f"GRPO ×{R}", disable=not progress):
        batch = rollout_runs(runs, oracle, B, config, prompt_ids=first.prompt_ids, eos_id=first.eos_id,
                             pad_id=first.pad_id, seeds=seeds, iteration=step, device=device)
        score, mask = batch.reward.to(device), batch.response
        with autocast(device, config.bf16):
            ref_logprob = references.token_logprobs(batch.tokens, batch.attention)
        with autocast(device, config.bf16):
            logprob = runs.token_logprobs(batch.tokens, batch.attention).float()
        old_logprob = logprob.detach()
        shaped = score
        if config.kl_form == "reward":
            shaped = objectives.shaped_reward(score, (old_logprob * mask).sum(-1), (ref_logprob * mask).sum(-1),
                                              config.beta)
        advantages = objectives.group_advantages(shaped, scale=config.scale_rewards == "group")  # per run

        if step % config.eval_every == 0 or step == config.n_iterations:
            for r in range(R):
                rows[r].append(rollout_row(step, score[r], batch.nll[r], old_logprob[r], ref_logprob[r], mask[r]))
            keep_runs(step, runs, models, checkpoints, on_eval)
        if step == config.n_iterations:
            break

        for update in range(config.num_ppo_epochs):
            if update > 0:
                with autocast(device, config.bf16):
                    logprob = runs.token_logprobs(batch.tokens, batch.attention).float()
            per_token = objectives.policy_loss(logprob, old_logprob, advantages[..., None], config.epsilon)
            if config.kl_form == "k3":
                per_token = per_token + config.beta * objectives.k3(logprob, ref_logprob)
            loss = (per_token * mask).sum((-2, -1)) / (B * config.max_new_tokens)  # [R]: grpo_loss per run
            batched_step(optimizer, loss, config.max_grad_norm)

    finish_runs(runs, models)
    trajectories = [pd.DataFrame(r) for r in rows]
    return [AlignmentRun(t, c, select_ppo(t)) for t, c in zip(trajectories, checkpoints)]


# ---------------------------------------------------------------------------------------------
# Backend "trl": the same run through trl.GRPOTrainer.

SUPPRESSED_LOGIT = -1e9
"""Output-layer bias of the suppressed tokens in TRL's loss: e^{−1e9} is 0 in every float type, and unlike
−∞ it keeps the fused head's entropy (Σ p·logit) finite."""


def completion_samples(prompt_ids: list[int], completion_ids: list[list[int]], pad_id: int) -> Samples:
    """`prompt + completion` rows, right-padded with `pad_id` (TRL hands completions as lists, EOS included)."""
    width = max(1, max(len(c) for c in completion_ids))
    tokens = torch.full((len(completion_ids), len(prompt_ids) + width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    tokens[:, :len(prompt_ids)] = torch.tensor(prompt_ids)
    for i, completion in enumerate(completion_ids):
        tokens[i, len(prompt_ids):len(prompt_ids) + len(completion)] = torch.tensor(completion, dtype=torch.long)
        mask[i, :len(prompt_ids) + len(completion)] = True
    return Samples(tokens, mask, len(prompt_ids))


def suppress_in_head(model, ids) -> None:
    """Give `ids` the bias `SUPPRESSED_LOGIT` in `model`'s output layer (a buffer, not saved; idempotent).

    TRL 1.16 scores completions with a fused LM head that multiplies the hidden states by the output
    layer's weight and adds its bias itself, so the forward hook of `suppress_tokens` never runs in its
    loss: without this, TRL's loss would renormalise over tokens its sampler can never draw."""
    head = model.get_output_embeddings()
    if not ids or _suppression_bias(head):
        return
    if head.bias is not None:
        raise ValueError(f"{type(model).__name__}'s output layer has a trained bias: suppressing tokens inside "
                         "TRL's fused head needs a bias-free one")
    bias = torch.zeros(head.weight.shape[0], device=head.weight.device)
    bias[list(ids)] = SUPPRESSED_LOGIT
    del head.bias  # nn.Linear keeps an empty `bias` parameter slot
    head.register_buffer("bias", bias, persistent=False)


def unsuppress_head(model) -> None:
    """Undo `suppress_in_head`: a bias-free output layer again."""
    head = model.get_output_embeddings()
    if _suppression_bias(head):
        del head.bias
        head.register_parameter("bias", None)


def _suppression_bias(head) -> bool:
    return isinstance(head.bias, torch.Tensor) and not isinstance(head.bias, torch.nn.Parameter)


def trl_reward(oracle: RewardOracle, prompt_ids: list[int], pad_id: int):
    """`oracle` as a TRL reward function (TRL passes each completion's token ids)."""
    def reward(prompts, completions, completion_ids, **kwargs):
        return oracle.reward(completion_samples(prompt_ids, completion_ids, pad_id)).tolist()
    return reward


def trl_trainer(policy: HFLanguageModel, reference: HFLanguageModel, reward_func, config: GRPOConfig, *, seed: int,
                folder: str, progress: bool = False, callbacks=()):
    """The `trl.GRPOTrainer` that backend "trl" trains with: `config` in TRL's names (`max_steps =
    n_iterations`, `num_generations = batch_size`, `loss_type = "dr_grpo"`, `use_bias_correction_kl =
    False`), `policy.model` trained in place, `reference.model` (saved under `folder`) as its frozen
    π_ref, `policy`'s suppressed tokens suppressed in TRL's loss too, and one prompt row per step.

    `use_bias_correction_kl` (True by default in TRL 1.16) multiplies the k3 term by the ratio ρ, whose
    gradient is not 0 even at ρ = 1: it adds β·k3·∇log π, which turns the KL gradient into the
    reverse-KL one. False keeps GRPO's published k3 (DeepSeekMath), the `kl_form = "k3"` of our loop:
    tests/test_lm_align_grpo.py pins both facts on TRL's own loss."""
    tokenizer, prompt_ids = policy.tokenizer, policy.prompt_ids
    if tokenizer is None:
        raise ValueError("GRPOConfig.backend = 'trl' needs a policy with a tokenizer: trl.GRPOTrainer tokenises "
                         "text prompts")
    prompt_text = tokenizer.decode(prompt_ids)
    if tokenizer(prompt_text)["input_ids"] != prompt_ids:
        raise ValueError(f"GRPOConfig.backend = 'trl': the tokenizer encodes the decoded prompt {prompt_text!r} as "
                         f"{tokenizer(prompt_text)['input_ids']}, not prompt_ids = {prompt_ids}; use backend = 'ours'")
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    device = resolve_device(config.device)
    model = policy.model.to(device)
    reference.model.save_pretrained(f"{folder}/reference")
    trl_config = TRLGRPOConfig(
        output_dir=f"{folder}/out", max_steps=config.n_iterations, learning_rate=config.learning_rate,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=config.max_grad_norm,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=1,
        num_generations=config.batch_size, generation_batch_size=config.batch_size,
        num_iterations=config.num_ppo_epochs, beta=config.beta, epsilon=config.epsilon,
        scale_rewards=config.scale_rewards, loss_type="dr_grpo", use_bias_correction_kl=False,
        max_completion_length=config.max_new_tokens, temperature=config.tau, top_p=1.0, top_k=0, seed=seed,
        data_seed=seed, bf16=config.bf16, use_cpu=device.type == "cpu", report_to="none", save_strategy="no",
        logging_strategy="steps" if progress else "no", logging_steps=config.eval_every,
        disable_tqdm=not progress, shuffle_dataset=False,
    )
    dataset = Dataset.from_dict({"prompt": [prompt_text] * max(1, config.n_iterations)})
    name_or_path = model.config._name_or_path
    model.config._name_or_path = f"{folder}/reference"  # GRPOTrainer loads its reference from here
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=trl_config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=list(callbacks))
    finally:
        model.config._name_or_path = name_or_path
    for network in (model, trainer.ref_model):
        suppress_tokens(network, policy.suppress_ids)
        suppress_in_head(network, policy.suppress_ids)
    if not progress:
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics even with logging off
    return trainer


def _train_grpo_trl(policy, reference, oracle, config, *, seed, progress, on_eval):
    from transformers import TrainerCallback

    device = resolve_device(config.device)
    prompt_ids, eos_id, pad_id = policy.prompt_ids, policy.eos_id, policy.pad_id
    model, reference_model = policy.model, reference.model
    model.to(device)
    reference_model.to(device).eval().requires_grad_(False)
    rows, checkpoints = [], {}

    def evaluate(step: int):
        was_training = model.training
        with autocast(device, config.bf16):  # rollouts in the training precision
            samples = sample(model, prompt_ids, config.batch_size, config.max_new_tokens, config.tau,
                             eos_id=eos_id, pad_id=pad_id, batch_size=config.batch_size,
                             seed=iteration_seed(seed, step)).to(device)
        attention, mask = samples.mask, samples.response_mask[:, 1:].float()
        with torch.no_grad(), autocast(device, config.bf16):
            logprob = token_logprobs(model, samples.tokens, attention).float()
            ref_logprob = token_logprobs(reference_model, samples.tokens, attention).float()
        nll = oracle.nll(samples)
        rows.append(rollout_row(step, oracle.reward_from_nll(nll), nll, logprob, ref_logprob, mask))
        checkpoints[step] = snapshot(step, model, on_eval)
        model.train(was_training)

    class Evaluate(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            evaluate(0)

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % config.eval_every == 0 or state.global_step == config.n_iterations:
                evaluate(state.global_step)

    with tempfile.TemporaryDirectory() as folder:
        trainer = trl_trainer(policy, reference, trl_reward(oracle, prompt_ids, pad_id), config, seed=seed,
                              folder=folder, progress=progress, callbacks=[Evaluate()])
        try:
            trainer.train()
        finally:
            unsuppress_head(model)

    model.eval()
    trajectory = pd.DataFrame(rows)
    return AlignmentRun(trajectory, checkpoints, select_ppo(trajectory))
