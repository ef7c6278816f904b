"""Llama students trained from scratch: the SmolLM2 sizes of the paper and small CPU sizes.

The paper (§4.2, App. C.2) trains a SmolLM2-360M (p') and SmolLM2-135M (p'', p_target) from
scratch. `STUDENT_SIZES` holds their exact architectures (from the released configs) next to
small sizes that train in seconds on a CPU. The vocabulary and special ids always come from
the ground truth's tokenizer, so a student and its teacher can never disagree on token ids.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# Architectures. The SmolLM2 entries are the released HuggingFaceTB configs; `vocab_size` is
# taken from the tokenizer at construction time (49152 for the SmolLM2 tokenizer).
STUDENT_SIZES: dict[str, dict] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    "smollm2-360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                         num_key_value_heads=5, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    # The `gpu` profile's students on the SmolLM2 tokenizer (49 152 tokens, tied embeddings): ~30 M and ~10 M
    # parameters, the embedding included (count_parameters: 29.5 M and 10.0 M).
    "30m": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                num_key_value_heads=6, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    "10m": dict(hidden_size=160, intermediate_size=512, num_hidden_layers=6, num_attention_heads=5,
                num_key_value_heads=5, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    # CPU sizes for the synthetic language: p' is `small`/`medium`, p'' and p_target `tiny`.
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    "small": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    "medium": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
}


def student_config(size: str, vocab_size: int, *, bos_id: int, eos_id: int, pad_id: int,
                   max_positions: int = 2048) -> LlamaConfig:
    """The `LlamaConfig` of a named student size for a given vocabulary and special ids."""
    if size not in STUDENT_SIZES:
        raise ValueError(f"student size '{size}' is unknown (allowed: {', '.join(STUDENT_SIZES)})")
    if vocab_size < 2:
        raise ValueError(f"vocab_size = {vocab_size}: must be >= 2")
    arch = dict(STUDENT_SIZES[size])
    rope_theta = arch.pop("rope_theta")
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=max_positions,
                       bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id,
                       rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                       hidden_act="silu", initializer_range=0.02, attention_bias=False, mlp_bias=False,
                       use_cache=True, **arch)


def make_student(size: str, vocab_size: int, *, bos_id: int, eos_id: int, pad_id: int,
                 max_positions: int = 2048, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised Llama of a named size (deterministic in `seed`), float32, on CPU."""
    config = student_config(size, vocab_size, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, max_positions=max_positions)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 1, heads: int = 2, *, intermediate: int | None = None,
               bos_id: int = 0, eos_id: int = 1, pad_id: int = 2, max_positions: int = 128, seed: int = 0) -> LlamaForCausalLM:
    """A tiny Llama for tests and toy experiments (random init, deterministic in `seed`)."""
    if hidden % heads:
        raise ValueError(f"hidden = {hidden} must be divisible by heads = {heads}")
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, bos_token_id=bos_id, eos_token_id=eos_id,
                         pad_token_id=pad_id, tie_word_embeddings=True, use_cache=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def count_parameters(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
