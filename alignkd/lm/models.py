"""The model types of the LLM testbed: `LanguageModel`, the interface every ground truth, student and
baseline samples and scores through, and `HFLanguageModel`, a `transformers` causal LM behind it.

A `LanguageModel` samples `prompt + response` sequences (`sample`), scores them (`log_prob`, summed and
per-token-average log-probability of the response) and carries the tokenizer and the special ids every
student must share. The ground truths themselves are in `alignkd.lm.groundtruth`.
"""

from __future__ import annotations

import torch

from .device import CPU, Placement
from .generation import Samples, SequenceScores, sample, sequence_logprobs


def bos_id_of(tokenizer, fallback: int) -> int:
    """The tokenizer's BOS id; `fallback` when there is no tokenizer or it has no BOS token."""
    bos = tokenizer.bos_token_id if tokenizer is not None else None
    return bos if bos is not None else fallback


class LanguageModel:
    """A distribution over `prompt + response` sequences that can be sampled and scored."""

    tokenizer = None
    prompt_ids: list[int]
    eos_id: int
    pad_id: int
    vocab_size: int
    exact: bool = False  # True when log_prob is an exact density (not a trained network)
    suppress_ids: list[int] = []  # tokens outside the language: probability 0 under every model of it
    placement: Placement = CPU  # where it computes and in which precision; a student wrapped by it inherits both

    def sample(self, n: int, max_new_tokens: int, temperature: float = 1.0, *, seed: int = 0,
               batch_size: int = 256, progress: bool = False) -> Samples:
        raise NotImplementedError

    def log_prob(self, samples: Samples, *, batch_size: int = 256) -> SequenceScores:
        raise NotImplementedError

    @property
    def bos_id(self) -> int:
        """The BOS a student of this language is built with: the tokenizer's, else the prompt's first token."""
        return bos_id_of(self.tokenizer, self.prompt_ids[0])

    def wrap(self, model) -> "HFLanguageModel":
        """A causal LM (e.g. a student) that shares this ground truth's tokenizer, prompt, ids, suppressed
        tokens and placement (see `HFLanguageModel`): the model moves to this ground truth's device."""
        check_vocabulary(model, self.vocab_size, where="student")
        return HFLanguageModel(model, self.tokenizer, self.prompt_ids, eos_id=self.eos_id, pad_id=self.pad_id,
                               suppress_ids=self.suppress_ids, placement=self.placement)


def check_vocabulary(model, vocab_size: int, where: str = "model") -> None:
    """Fail before any work when a model's embedding cannot index the ground truth's tokens."""
    model_vocab = model.get_input_embeddings().num_embeddings
    if model_vocab < vocab_size:
        raise ValueError(f"{where} has {model_vocab} token embeddings but the ground truth's tokenizer has "
                         f"{vocab_size} tokens: teacher and student tokenizers are incompatible")


def suppress_tokens(model, ids) -> None:
    """Give `ids` logit −∞ in every forward pass of `model` (a hook on its output layer; idempotent)."""
    ids = list(ids)
    if not ids or getattr(model, "_alignkd_suppressed", None) == ids:
        return
    index = torch.tensor(ids)

    def hook(module, inputs, output):
        return output.index_fill(-1, index.to(output.device), float("-inf"))

    model.get_output_embeddings().register_forward_hook(hook)
    model._alignkd_suppressed = ids


def check_tokenizers(teacher_tokenizer, student_tokenizer) -> None:
    """Teacher and student must map every token to the same id (KD trains on teacher ids)."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        t, s = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
        differ = sorted(k for k in set(t) | set(s) if t.get(k) != s.get(k))[:5]
        raise ValueError(f"teacher and student tokenizers are incompatible: {len(t)} vs {len(s)} tokens, "
                         f"first differing tokens {differ}")
    for name in ("eos_token_id", "pad_token_id"):
        if getattr(teacher_tokenizer, name) != getattr(student_tokenizer, name):
            raise ValueError(f"teacher and student tokenizers disagree on {name}: "
                             f"{getattr(teacher_tokenizer, name)} vs {getattr(student_tokenizer, name)}")


class HFLanguageModel(LanguageModel):
    """A `transformers` causal LM with everything that samples or trains it needs: the tokenizer, the
    prompt every sample starts from, the EOS and padding ids, and the tokens outside the language.

    This is the policy object of alignment and PAD. `suppress_ids` get logit −∞ inside the model itself
    (`suppress_tokens`), so every forward pass — sampling, scoring, a trainer's loss, TRL's — sees the
    same renormalised distribution, and a deep copy of the model keeps it.

    `placement` (`alignkd.lm.device.Placement`): the model is moved to its device (float32 master weights)
    and samples and scores there under its autocast (bf16 when asked, on CUDA and CPU alike)."""

    def __init__(self, model, tokenizer, prompt_ids, *, eos_id: int, pad_id: int, suppress_ids=(),
                 placement: Placement = CPU):
        self.model, self.tokenizer, self.placement = model.to(placement.device), tokenizer, placement
        self.suppress_ids = list(suppress_ids)
        suppress_tokens(model, self.suppress_ids)
        self.prompt_ids, self.eos_id, self.pad_id = list(prompt_ids), int(eos_id), int(pad_id)
        self.vocab_size = len(tokenizer) if tokenizer is not None else model.config.vocab_size

    def with_model(self, model) -> "HFLanguageModel":
        """The same tokenizer, prompt and ids around another model (e.g. a trained copy)."""
        return HFLanguageModel(model, self.tokenizer, self.prompt_ids, eos_id=self.eos_id, pad_id=self.pad_id,
                               suppress_ids=self.suppress_ids, placement=self.placement)

    def sample(self, n, max_new_tokens, temperature=1.0, *, seed=0, batch_size=256, progress=False):
        with self.placement.autocast():
            return sample(self.model, self.prompt_ids, n, max_new_tokens, temperature, eos_id=self.eos_id,
                          pad_id=self.pad_id, batch_size=batch_size, seed=seed, progress=progress)

    def log_prob(self, samples, *, batch_size=256):
        self.model.eval()
        with self.placement.autocast():
            return sequence_logprobs(self.model, samples, batch_size=batch_size)
