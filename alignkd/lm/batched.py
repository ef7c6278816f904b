"""R same-shaped Llama students as one computation with a leading run dimension.

    batch = BatchedLlama.from_models(models, suppress_ids=truth.suppress_ids)   # R LlamaForCausalLM, one shape
    per_run = batch.sample(prompt_ids, n, max_new_tokens, tau, eos_id=, pad_id=, seeds=[...])  # R `Samples`
    every = stack_samples(per_run, pad_id)                                        # R·n rows: .tokens.view(R, n, -1)
    logprob = batch.response_logprobs(tokens, attention, response)                # [R, n] from [R, n, T] inputs
    optimizer = RunAdam(batch.parameters(), lr=...)                               # R independent Adams
    optimizer_step(optimizer, loss_per_run, max_grad_norm)                        # loss [R] or [R, N]
    batch.load_into(models)                                                       # back to transformers

Why: chapter 06's students have a few thousand to ~1M parameters, so one run's time is Python and dispatch
overhead, not arithmetic. Putting the R runs (e.g. the seeds of one algorithm) on a leading tensor dimension pays
that overhead once per step instead of R times, as the MoG testbed does with its trials.

Why an explicit forward and not `torch.vmap(functional_call(LlamaForCausalLM, ...))`: with transformers 5 and
torch 2.13, vmap over the HF Llama fails as soon as the attention mask has padding (its mask construction branches
on the mask's values: "data-dependent control flow"), which every scored batch has; without a mask it runs, but
`scaled_dot_product_attention` has no CPU batching rule and falls back to a Python loop over the runs, and the KV
cache (a Python object) cannot leave a vmapped function, so sampling would recompute the whole prefix each step.
The forward below is the student architecture written once with a run dimension (RMSNorm, rotary embeddings,
grouped-query attention, SwiGLU MLP, tied or untied output embedding), parameters stacked by
`torch.func.stack_module_state` under transformers' own names, with a KV cache for sampling;
`tests/test_lm_batched.py` holds it equal to `LlamaForCausalLM` on the same weights.

Equal to the one-at-a-time code, to float32 rounding (the batched matmuls are other kernels than HF's, so logits
agree to ~1e-6, not bitwise):
- `logits`, `token_logprobs`, `response_logprobs`: per run, as `generation.token_logprobs` / `dpo.response_logprobs`.
- `sample`: per run, the same tokens as `generation.sample(model_r, ..., batch_size >= n, seed=seeds[r])`.
  `torch.multinomial(p, 1, generator=g)` is argmax(p / E) with E ~ Exp(1) of p's shape drawn from g (its
  one-sample fast path); here each run's E is drawn from that run's own generator with the same shape at every
  step, so the random stream is identical, and the batched draw is one argmax over [R, n, V]. The tokens are
  therefore identical whenever each step's probabilities round alike; they can differ only where the two largest
  p/E of a row tie within float32 rounding (a relative gap below ~1e-6: about one draw in a million), after which
  that sequence diverges, and in a training loop that run then learns from other samples
  (`benchmarks/lm_batched.py` counts such runs).
- `RunAdam` over the stacked parameters is R independent Adams, each with its own step count: a run with nothing
  to learn from in a step (e.g. every DPO pair tied) sits it out as it would alone. The loss is the sum over runs of
  each run's mean, so each run's slice gets its own gradient, and `optimizer_step` clips each run's gradient norm
  by itself. The learning rate is one for all runs (the seeds of an alignment algorithm) or one per run (KD
  students, whose warmup-stable-decay schedules end where each run's held-out loss says: `kd_batched`), and an
  AdamW weight decay is decoupled as `torch.optim.AdamW` decouples it.
- Tested in float32; under bf16 autocast the same code runs, with rounding no longer comparable to HF's.

Speed: `python benchmarks/lm_batched.py` (each algorithm's own `train` per seed against its `train_runs`, chapter
06's default settings, N = 12 seeds of the `tiny` student, 50 iterations, one thread, load average ~3.1 on the shared
2-core machine, 2026-12-03) measured 3.40x less CPU for PPO, 3.08x DPO, 2.82x GRPO, 2.74x GRPO with the KL in the
reward and 3.06x KTO (the issue's goal was 4x). Sampling, all overhead one at a time, gets ~5x cheaper; scoring and the update, at R·B = 768 sequences of 25
tokens with hidden size 32, are arithmetic- and memory-bound and get only ~1.4x; and the per-run Exp(1) draws that
make the tokens identical cost the same in both (~12 % of a batched iteration). `torch.compile` made the scoring
pass with its backward ~1.5x faster in a trial (10 s to compile each shape): not used here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.func import stack_module_state

from .generation import Samples

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [R, ..., in] @ weight[r].T for each run r (weight [R, out, in], no bias: the students have none)."""
    return torch.bmm(x.flatten(1, -2), weight.mT).view(*x.shape[:-1], weight.shape[1])


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm with a run dimension (weight [R, C]), in float32 as transformers computes it."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight[:, None, None] * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), -1)


class KVCache:
    """Each layer's rotated keys and values of the positions fed so far, [rows, kv_heads, capacity, head_dim] per
    layer: buffers of a fixed capacity, so a sampling step writes one position instead of copying the whole
    prefix as `torch.cat` would (that copy was a tenth of a sampling step's time at the chapter's sizes)."""

    def __init__(self, layers: int, capacity: int):
        self.keys: list = [None] * layers
        self.values: list = [None] * layers
        self.capacity, self.length = capacity, 0

    def extend(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this call's keys and values after the cached ones; return all of them (views of the buffers)."""
        if self.keys[layer] is None:  # allocated at the first write: rows, heads and dtype are the forward's
            shape = (*keys.shape[:2], self.capacity, keys.shape[-1])
            self.keys[layer], self.values[layer] = keys.new_empty(shape), values.new_empty(shape)
        end = self.length + keys.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KVCache holds {self.capacity} positions; {end} were fed")
        self.keys[layer][:, :, self.length:end] = keys
        self.values[layer][:, :, self.length:end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class BatchedLlama:
    """R `LlamaForCausalLM`s of one shape: parameters stacked to [R, ...] leaves, one forward for all runs."""

    def __init__(self, params: dict[str, torch.Tensor], config, inv_freq: torch.Tensor, suppress_ids=()):
        rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
        if config.hidden_act != "silu" or config.attention_bias or config.mlp_bias or rope_type != "default":
            raise ValueError(f"BatchedLlama supports the students' Llama (silu, no biases, default rotary), got "
                             f"hidden_act = {config.hidden_act!r}, attention_bias = {config.attention_bias}, "
                             f"mlp_bias = {config.mlp_bias}, rope_type = {rope_type!r}")
        self.params, self.config, self.inv_freq = params, config, inv_freq
        self.suppress_ids = list(suppress_ids)
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.runs = params[EMBED].shape[0]

    @staticmethod
    def from_models(models: Sequence[torch.nn.Module], suppress_ids=()) -> "BatchedLlama":
        """Copies of the models' parameters, stacked (the models are left untouched; `load_into` writes back)."""
        config = models[0].config

        def shape(model) -> dict:  # where a model was loaded from is not its shape
            return {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}

        if any(shape(m) != shape(models[0]) for m in models):
            raise ValueError("BatchedLlama needs models of one shape (identical configs)")
        params, buffers = stack_module_state(list(models))
        return BatchedLlama(params, config, buffers["model.rotary_emb.inv_freq"][0], suppress_ids)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def state_dict(self, run: int) -> dict[str, torch.Tensor]:
        """Run `run`'s parameters under transformers' names (a tied head shares the embedding)."""
        state = {name: tensor[run].detach() for name, tensor in self.params.items()}
        if HEAD not in state:
            state[HEAD] = state[EMBED]
        return state

    @torch.no_grad()
    def load_state_dict(self, run: int, state: dict[str, torch.Tensor]) -> None:
        """Put `state` (a `state_dict(run)`, e.g. a run's best weights kept earlier) into run `run` alone, the other
        runs untouched; the optimiser's moments stay, as `model.load_state_dict` leaves a `torch.optim` state."""
        for name, tensor in self.params.items():
            tensor[run].copy_(state[name])

    def select(self, runs: Sequence[int]) -> "BatchedLlama":
        """The runs `runs` alone, in that order, as new leaf tensors (copies: this batch is left as it is)."""
        index = torch.as_tensor(list(runs), dtype=torch.long)
        params = {name: tensor.detach()[index].clone().requires_grad_(tensor.requires_grad)
                  for name, tensor in self.params.items()}
        return BatchedLlama(params, self.config, self.inv_freq, self.suppress_ids)

    @torch.no_grad()
    def load_into(self, models: Sequence[torch.nn.Module]) -> None:
        """Copy each run's parameters into its `LlamaForCausalLM` (e.g. after training batched)."""
        for run, model in enumerate(models):
            model.load_state_dict(self.state_dict(run))

    # ------------------------------------------------------------------ the forward pass

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: KVCache | None = None,
               positions: slice = slice(None), hidden: bool = False):
        """Next-token logits [R, B, T, V] of input_ids [R, B, T] given the key mask [R, B, T_past + T].

        `positions` picks the positions whose logits are made (scoring needs all but the last, sampling the last):
        the [R, B, T, V] logits are the largest tensor of a pass, and slicing them afterwards costs a copy and,
        in the backward pass, a zero-filled gradient of the full size. `hidden`: also return the final (normed)
        hidden states at those positions, transformers' `hidden_states[-1]` (PPO's value head reads them).

        `cache` (a `KVCache`, extended in place) holds the earlier positions' keys and values, so sampling feeds one
        token per step. Positions count from the first token (0..T-1 without a cache), as transformers counts them
        for right-padded batches."""
        p, cfg = self.params, self.config
        R, B, T = input_ids.shape
        past = 0 if cache is None else cache.length
        vocab = p[EMBED].shape[1]
        runs = torch.arange(R, device=input_ids.device)[:, None, None]
        x = p[EMBED].flatten(0, 1)[input_ids + runs * vocab]  # each run looks tokens up in its own table

        index = torch.arange(past, past + T, device=x.device, dtype=torch.float)  # rotary angle = position · inv_freq
        freqs = index[:, None] * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), -1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)  # [T, D], the same for every run and row

        # causal mask over [past + new] keys, padding keys removed: [R*B, 1, T, past + T]
        causal = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
        allowed = (causal & attention_mask.bool().flatten(0, 1)[:, None, :])[:, None]

        for i in range(cfg.num_hidden_layers):
            prefix = f"model.layers.{i}."
            h = rms_norm(x, p[prefix + "input_layernorm.weight"], cfg.rms_norm_eps)
            q = self.split_heads(linear(h, p[prefix + "self_attn.q_proj.weight"]), self.heads)
            k = self.split_heads(linear(h, p[prefix + "self_attn.k_proj.weight"]), self.kv_heads)
            v = self.split_heads(linear(h, p[prefix + "self_attn.v_proj.weight"]), self.kv_heads)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            if cache is not None:
                k, v = cache.extend(i, k, v)
            # grouped-query attention: kv head j serves query heads j*groups .. (j+1)*groups-1 (transformers' repeat_kv)
            groups = self.heads // self.kv_heads
            if groups > 1:
                k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=1 / math.sqrt(self.head_dim))
            attn = attn.transpose(1, 2).reshape(R, B, T, self.heads * self.head_dim)
            x = x + linear(attn, p[prefix + "self_attn.o_proj.weight"])
            h = rms_norm(x, p[prefix + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
            gate = F.silu(linear(h, p[prefix + "mlp.gate_proj.weight"]))
            x = x + linear(gate * linear(h, p[prefix + "mlp.up_proj.weight"]), p[prefix + "mlp.down_proj.weight"])
        if cache is not None:
            cache.length += T
        x = rms_norm(x[:, :, positions], p["model.norm.weight"], cfg.rms_norm_eps)
        return self.head(x) if not hidden else (self.head(x), x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [R, B, T, V] of final hidden states x [R, B, T, C], the suppressed tokens at −∞."""
        p = self.params
        logits = linear(x, p.get(HEAD, p[EMBED]))
        if self.suppress_ids:  # as models.suppress_tokens: outside the language, probability 0 in every pass
            # in place: bmm's backward does not need its output, and a copy of the logits is what we avoid
            logits.index_fill_(-1, torch.tensor(self.suppress_ids, device=logits.device), float("-inf"))
        return logits

    def split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """[R, B, T, heads·D] -> [R·B, heads, T, D]: runs and rows are one batch dimension for the attention."""
        R, B, T, _ = x.shape
        return x.view(R * B, T, heads, self.head_dim).transpose(1, 2)

    def token_logprobs(self, tokens: torch.Tensor, mask: torch.Tensor, hidden: bool = False):
        """[R, B, T-1] log p(x_t | x_<t) per run, zero where mask[..., 1:] is False (`generation.token_logprobs`);
        `hidden`: also the final hidden states [R, B, T-1, C] they were computed from."""
        logits, states = self.logits(tokens, mask, positions=slice(0, -1), hidden=True)
        picked = torch.log_softmax(logits.float(), -1).gather(-1, tokens[:, :, 1:, None])[..., 0]
        picked = torch.where(mask[:, :, 1:].bool(), picked, torch.zeros((), dtype=picked.dtype, device=picked.device))
        return (picked, states) if hidden else picked

    def response_logprobs(self, tokens: torch.Tensor, attention: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """[R, B] summed log-prob of each response, per run (`dpo.response_logprobs`)."""
        logprob = self.token_logprobs(tokens, attention)
        return torch.where(response.bool(), logprob, torch.zeros((), device=logprob.device)).sum(-1)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(self, prompt_ids: Sequence[int], n: int, max_new_tokens: int, temperature: float = 1.0, *,
               eos_id: int, pad_id: int, seeds: Sequence[int]) -> list[Samples]:
        """`n` ancestral samples per run, run r drawn with `seeds[r]`: run r's `Samples` are those of
        `generation.sample(model_r, prompt_ids, n, ..., batch_size=n, seed=seeds[r])` (module docstring).

        One batch of n per run, as `training.rollout` samples. Returns one `Samples` per run, each trimmed to its
        own longest response as `generation.sample` trims; `stack_samples` joins them for [R, n, T] views."""
        if temperature <= 0:
            raise ValueError(f"temperature = {temperature}: must be > 0 (ancestral sampling)")
        if len(seeds) != self.runs:
            raise ValueError(f"{len(seeds)} seeds for {self.runs} runs: give one seed per run")
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"n = {n}, max_new_tokens = {max_new_tokens}: each must be >= 1")
        device = self.params[EMBED].device
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        R, P = self.runs, len(prompt_ids)
        tokens = torch.tensor(list(prompt_ids), device=device).repeat(R, n, 1)
        mask = torch.zeros(R, n, P + max_new_tokens, dtype=torch.bool, device=device)  # filled a column per step
        mask[..., :P] = True
        alive = torch.ones(R, n, dtype=torch.bool, device=device)
        cache = KVCache(self.config.num_hidden_layers, P + max_new_tokens)
        logits = self.logits(tokens, mask[..., :P], cache, positions=slice(-1, None))
        new_tokens = []
        for step in range(max_new_tokens):
            probs = torch.softmax(logits[:, :, -1].float() / temperature, -1)
            # each run's Exp(1) noise from its own generator, shaped as torch.multinomial draws it for that run
            noise = torch.empty_like(probs)
            for run, generator in enumerate(generators):
                noise[run].exponential_(generator=generator)
            next_token = (probs / noise).argmax(-1)
            next_token = torch.where(alive, next_token, torch.full_like(next_token, pad_id))
            new_tokens.append(next_token)
            mask[..., P + step] = alive  # EOS is a real token: the mask is the state before this token
            alive = alive & (next_token != eos_id)
            if not alive.any() or step == max_new_tokens - 1:
                break
            logits = self.logits(next_token[..., None], mask[..., :P + step + 1], cache)
        tokens = torch.cat([tokens, torch.stack(new_tokens, -1)], -1)
        mask = mask[..., :tokens.shape[-1]]
        return [Samples(tokens[r], mask[r], P).trim() for r in range(R)]


def stack_samples(samples: Sequence[Samples], pad_id: int) -> Samples:
    """Per-run `Samples` of one size n as one `Samples` of R·n rows, run-major and right-padded to the widest, so
    that `.tokens.view(R, n, -1)` (likewise `.mask`, `.response_mask`) puts the run dimension in front."""
    if len({len(s) for s in samples}) != 1:
        raise ValueError(f"runs have different sample counts {[len(s) for s in samples]}: cannot stack them")
    return Samples.cat(list(samples), pad_id)


class RunAdam:
    """Adam (or AdamW) over stacked [R, ...] parameters with a step count per run, so that a run can sit a step out.

    `torch.optim.Adam` over the stacked parameters is R independent Adams only while every run steps every time:
    one at a time, a run with nothing to learn from in an iteration (every DPO pair tied: a collapsed policy) takes
    no step at all, so its weights, its moments and its bias correction stay where they were. `step(active)` does
    exactly that for the runs not in `active`. The arithmetic is `torch.optim.AdamW`'s (no amsgrad), lr_r being
    run r's learning rate: p ← p·(1 − lr_r·wd) (decoupled weight decay; wd = 0, the default, is
    `torch.optim.Adam`), m ← lerp(m, g, 1 − β1), v ← β2·v + (1 − β2)·g²,
    p ← p − lr_r/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε).

    `lr` is a number (every run) or an [R] tensor, and may be reassigned between steps: a per-run schedule (KD's
    warmup-stable-decay, whose decay each run starts when its own held-out loss stops improving) sets `.lr`.
    """

    def __init__(self, params: Sequence[torch.Tensor], lr: float | torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.weight_decay = weight_decay
        runs = self.params[0].shape[0]
        self.steps = torch.zeros(runs, dtype=torch.float64)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def select(self, runs: Sequence[int], params: Sequence[torch.Tensor]) -> "RunAdam":
        """This optimiser's state of the runs `runs` alone, over `params` (those runs' parameters, e.g.
        `BatchedLlama.select(runs).parameters()`): each kept run steps on as it would have in the whole batch."""
        index = torch.as_tensor(list(runs), dtype=torch.long)
        lr = torch.as_tensor(self.lr)
        kept = RunAdam(params, lr[index] if lr.dim() else self.lr, self.betas, self.eps, self.weight_decay)
        kept.steps = self.steps[index].clone()
        kept.exp_avg = [m[index].clone() for m in self.exp_avg]
        kept.exp_avg_sq = [v[index].clone() for v in self.exp_avg_sq]
        return kept

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One Adam step of the runs in `active` ([R] bool; None: all) on the gradients in `.grad`."""
        beta1, beta2 = self.betas
        runs = self.steps.shape[0]
        active = torch.ones(runs, dtype=torch.bool) if active is None else active.detach().cpu().bool()
        # in float64 like torch's Python-float learning rate, rounded to float32 once, as torch rounds its scalars
        lr = torch.as_tensor(self.lr).detach().cpu().double().expand(runs)
        self.steps += active
        steps = self.steps.clamp(min=1)  # a run that never stepped is left as it is below
        step_size = (lr / (1 - beta1 ** steps)).float()
        bias_sqrt = torch.sqrt(1 - beta2 ** steps).float()
        decay = (1 - lr * self.weight_decay).float()
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            shape = (runs,) + (1,) * (p.dim() - 1)
            on = active.to(p.device).view(shape)
            g = p.grad
            if self.weight_decay:  # AdamW: shrink the weights before the Adam update, by the run's own lr
                p.mul_(torch.where(on, decay.to(p.device).view(shape), torch.ones((), dtype=p.dtype, device=p.device)))
            m.copy_(torch.where(on, m.lerp(g, 1 - beta1), m))
            v.copy_(torch.where(on, v * beta2 + (1 - beta2) * g * g, v))
            denom = v.sqrt() / bias_sqrt.to(p.device).view(shape) + self.eps
            update = step_size.to(p.device).view(shape) * (m / denom)
            p.sub_(torch.where(on, update, torch.zeros((), dtype=p.dtype, device=p.device)))


def optimizer_step(optimizer: RunAdam, loss: torch.Tensor, max_grad_norm: float,
                   active: torch.Tensor | None = None) -> None:
    """One step of every run in `active` ([R] bool; None: all) on its own loss (`training.optimizer_step`, per run):
    loss [R] or per-example [R, N] (averaged over N). Summing the runs' losses gives each run's slice exactly its
    own gradient; the norm clip is per run (0: not clipped), as `clip_grad_norm_` would clip each model alone."""
    optimizer.zero_grad(set_to_none=True)
    per_run = loss.mean(-1) if loss.dim() == 2 else loss
    per_run.sum().backward()
    if max_grad_norm > 0:
        grads = [p.grad for p in optimizer.params if p.grad is not None]  # the policy's and e.g. a value head's
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # [tensors, R]
        # a zero column keeps dimension 0 strided for any R: a lone run's [tensors, 1] would be reduced as contiguous
        # memory, in another order, and a run's numbers would depend on how many runs share its stack
        norms = torch.cat([norms, torch.zeros_like(norms[:, :1])], 1).norm(dim=0)[:-1]  # [R]
        scale = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
    optimizer.step(active)
