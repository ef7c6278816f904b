"""Ancestral sampling from a causal LM and scoring of sampled sequences.

Everything in the LLM testbed is a sequence `prompt + response`, stored right-padded as

    tokens  [n, prompt_length + max_new_tokens]   int64, padding = `pad_id`
    mask    [n, same]                             bool, True on every real token: the prompt,
                                                  the response and its EOS (EOS is a real token
                                                  that students must learn, never padding)

A response that reaches `max_new_tokens` without EOS is truncated; its probability is the
probability of that prefix, under every model alike, so densities stay comparable.

`sample` draws from the model's own next-token distribution at temperature τ with nothing
cut off (no top-k, no top-p): transformers' `generate` defaults to top_k = 50, which would
silently truncate the tail that the recall metrics are about. `sequence_logprobs` returns the
summed and the per-token-average log-probability of the response tokens (paper §4.2 reports
per-token averages). Both work for any `transformers` causal LM and are batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from tqdm.auto import tqdm


@dataclass
class Samples:
    """Right-padded sequences `prompt + response (+ EOS)` with their real-token mask."""

    tokens: torch.Tensor  # [n, T] int64
    mask: torch.Tensor  # [n, T] bool, True on prompt, response and EOS tokens
    prompt_length: int

    def __post_init__(self):
        if self.tokens.shape != self.mask.shape:
            raise ValueError(f"tokens {tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)} differ in shape")
        if not 0 < self.prompt_length <= self.tokens.shape[1]:
            raise ValueError(f"prompt_length = {self.prompt_length} must be in 1..{self.tokens.shape[1]}")
        self.mask = self.mask.bool()

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def response_mask(self) -> torch.Tensor:
        """True on response tokens (EOS included), False on the prompt and on padding."""
        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return self.mask & (positions >= self.prompt_length)

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)

    def ended(self, eos_id: int) -> torch.Tensor:
        """True for sequences that end with EOS (False for those truncated at the length cap)."""
        last = (self.mask.sum(1) - 1).clamp(min=0)
        return self.tokens.gather(1, last[:, None])[:, 0] == eos_id

    def __getitem__(self, index) -> "Samples":
        return Samples(self.tokens[index], self.mask[index], self.prompt_length)

    def to(self, device) -> "Samples":
        return Samples(self.tokens.to(device), self.mask.to(device), self.prompt_length)

    def trim(self) -> "Samples":
        """Drop trailing columns that are padding in every row."""
        width = int(self.mask.sum(1).max()) if len(self) else self.prompt_length
        return Samples(self.tokens[:, :width], self.mask[:, :width], self.prompt_length)

    @staticmethod
    def cat(parts: Sequence["Samples"], pad_id: int) -> "Samples":
        """Concatenate along the batch, right-padding to the widest part."""
        if not parts:
            raise ValueError("nothing to concatenate")
        prompt_length = parts[0].prompt_length
        if any(p.prompt_length != prompt_length for p in parts):
            raise ValueError("cannot concatenate samples with different prompt lengths")
        width = max(p.tokens.shape[1] for p in parts)
        tokens = torch.cat([torch.nn.functional.pad(p.tokens, (0, width - p.tokens.shape[1]), value=pad_id) for p in parts])
        mask = torch.cat([torch.nn.functional.pad(p.mask, (0, width - p.mask.shape[1]), value=False) for p in parts])
        return Samples(tokens, mask, prompt_length)

    def save(self, path: Path) -> None:
        small = torch.int16 if int(self.tokens.max()) < 2**15 else torch.int32
        torch.save({"tokens": self.tokens.cpu().to(small), "mask": self.mask.cpu(), "prompt_length": self.prompt_length}, path)

    @staticmethod
    def load(path: Path) -> "Samples":
        data = torch.load(path, weights_only=True)
        return Samples(data["tokens"].long(), data["mask"], int(data["prompt_length"]))

    def texts(self, tokenizer) -> list[str]:
        """Decoded responses (prompt and padding removed), for showing a few samples."""
        rows = []
        for tokens, keep in zip(self.tokens.tolist(), self.response_mask.tolist()):
            rows.append(tokenizer.decode([t for t, k in zip(tokens, keep) if k]))
        return rows


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sample(
    model,
    prompt_ids: Sequence[int],
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    *,
    eos_id: int,
    pad_id: int,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> Samples:
    """Draw `n` ancestral samples `prompt + response` from a causal LM at temperature τ.

    Args:
        model: a `transformers` causal LM (any architecture with a KV cache).
        prompt_ids: the token ids every sample starts from (e.g. `[bos_id]` or the ids of "The").
        n: number of samples.
        max_new_tokens: response length cap; a response that reaches it without EOS is truncated.
        temperature: τ > 0; next-token probabilities ∝ p^(1/τ); no top-k, no top-p.
        eos_id, pad_id: EOS ends a response and is kept (mask True); `pad_id` fills the rest.
        batch_size: sequences generated in parallel.
        seed: samples are a deterministic function of (model, seed, batch_size) on CPU.
        progress: show a tqdm bar over batches.

    Tokens outside the language are the model's own business: `models.HFLanguageModel` gives
    them logit −∞ inside the model, so sampling and scoring here see the same distribution.

    Returns:
        `Samples` with tokens [n, len(prompt) + L] where L <= max_new_tokens is the longest response.
    """
    if temperature <= 0:
        raise ValueError(f"temperature = {temperature}: must be > 0 (ancestral sampling)")
    if n < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"n = {n}, max_new_tokens = {max_new_tokens}, batch_size = {batch_size}: each must be >= 1")
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise ValueError("prompt_ids is empty: give at least a BOS token")
    device = _device_of(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    parts = []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="sampling", disable=not progress, leave=False):
        b = min(batch_size, n - start)
        tokens = torch.tensor(prompt_ids, device=device).repeat(b, 1)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        alive = torch.ones(b, dtype=torch.bool, device=device)
        out = model(input_ids=tokens, attention_mask=mask.long(), use_cache=True)
        new_tokens, new_mask = [], []
        for step in range(max_new_tokens):
            logits = out.logits[:, -1, :].float() / temperature
            next_token = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
            next_token = torch.where(alive, next_token, torch.full_like(next_token, pad_id))
            new_tokens.append(next_token)
            new_mask.append(alive.clone())
            alive = alive & (next_token != eos_id)
            if not alive.any() or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, new_mask[-1][:, None]], 1)
            out = model(input_ids=next_token[:, None], attention_mask=mask.long(),
                        past_key_values=out.past_key_values, use_cache=True)
        parts.append(Samples(torch.cat([tokens, torch.stack(new_tokens, 1)], 1),
                             torch.cat([torch.ones_like(tokens, dtype=torch.bool), torch.stack(new_mask, 1)], 1),
                             len(prompt_ids)))
    model.train(was_training)
    return Samples.cat(parts, pad_id).trim()


def token_logprobs(model, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_<t) for t = 1..T-1 under `model`, shape [n, T-1], zero where `mask[:, 1:]` is False.

    Differentiable (call under `torch.no_grad()` when scoring only). Log-softmax is taken in float32.
    """
    logits = model(input_ids=tokens, attention_mask=mask.long()).logits[:, :-1].float()
    targets = tokens[:, 1:]
    picked = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    return torch.where(mask[:, 1:], picked, torch.zeros((), dtype=picked.dtype, device=picked.device))


class SequenceScores(NamedTuple):
    """Log-probabilities of response tokens, one entry per sequence."""

    total: torch.Tensor  # Σ_t log p(y_t | x, y_<t)
    per_token: torch.Tensor  # total / number of response tokens (EOS counted), the paper's metric
    n_tokens: torch.Tensor  # number of response tokens


def sequence_logprobs(model, samples: Samples, *, batch_size: int = 256, grad: bool = False) -> SequenceScores:
    """Summed and per-token-average log-probability of each response under a causal LM.

    Only response tokens count (the prompt is conditioned on); EOS counts; padding does not.
    With `grad=False` (default) runs under `torch.no_grad()` and returns CPU tensors on the
    samples' device; with `grad=True` the result is differentiable (keep batches small).
    """
    device = _device_of(model)
    response = samples.response_mask[:, 1:]
    totals = []
    with torch.set_grad_enabled(grad):
        for start in range(0, len(samples), batch_size):
            part = samples[start:start + batch_size].trim().to(device)
            per_position = token_logprobs(model, part.tokens, part.mask)
            keep = part.response_mask[:, 1:]
            totals.append(torch.where(keep, per_position, torch.zeros((), device=device)).sum(1))
    total = torch.cat(totals).to(samples.tokens.device)
    n_tokens = response.sum(1)
    return SequenceScores(total, total / n_tokens.clamp(min=1), n_tokens)
