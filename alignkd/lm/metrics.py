"""Metrics of the LLM testbed (paper §4.2, SPEC §4): per-token average log-likelihoods.

For a model q, ground truth p* and target p_target (all `LanguageModel`s):

- precision         = E_{x~q} [ log p*(x) / |x| ]          samples of q scored by p*
- recall            = E_{x~p*}[ log q(x)  / |x| ]          samples of p* scored by q
- target precision  = E_{x~q} [ log p_target(x) / |x| ]    samples of q scored by p_target
- mean reward       = E_{x~q} [ R(x) ]                      the folded oracle reward (App. C.3)

|x| is the number of response tokens (EOS included); each expectation is a Monte Carlo mean
over the stated number of sequences, and the mean of per-sequence averages (each sequence
weighs the same, as the per-sequence reward does). Under `markov_mixture` p* and p_target are
exact densities, and `target_share` (the share of q's samples whose most likely topic is the
target topic) shows directly how much of the rare topic a model still produces.

Baselines for recall. A uniform guess over the language's tokens scores −log V per token; a
`UnigramModel` of a KD dataset (its token frequencies, add-α smoothed, α chosen by leave-one-out on
that dataset alone) is what a student trained on the same data gets without learning any context.
A student has learnt something real only when its recall is clearly above the unigram's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .generation import Samples, SequenceScores
from .groundtruth import MarkovMixture
from .models import LanguageModel


@dataclass(frozen=True)
class MetricConfig:
    n_samples: int = 2000
    """Samples of q (precision, target precision, reward); the recall set is fixed by the caller."""
    max_new_tokens: int = 24
    seed: int = 12345

    def __post_init__(self):
        if self.n_samples < 1 or self.max_new_tokens < 1:
            raise ValueError(f"MetricConfig: n_samples = {self.n_samples}, max_new_tokens = {self.max_new_tokens} must be >= 1")
COLUMNS_VERSION = 2
"""In the cache key of every table that holds metric columns: tables cached before the columns took the paper's
names (precision → overall_precision, recall → overall_recall, target_mass / share → target_share) are
recomputed, never read back with the old names."""


def per_token_mean(model: LanguageModel, samples: Samples, batch_size: int = 512) -> float:
    """Mean over sequences of the per-token average log-probability of the response under `model`."""
    return float(model.log_prob(samples, batch_size=batch_size).per_token.double().mean())


def target_share(p_star: MarkovMixture, samples: Samples, target_topic: int) -> float:
    """Share of `samples` whose most probable topic under p* is `target_topic` (markov_mixture only)."""
    return float((p_star.topic_posterior(samples).argmax(1) == target_topic).double().mean())


def evaluate(q: LanguageModel, *, p_star: LanguageModel, p_target: LanguageModel, recall_samples: Samples,
             config: MetricConfig = MetricConfig(), oracle=None, target_topic: int | None = None) -> dict[str, float]:
    """All metrics of one model. `recall_samples` are samples of p* (shared by every model compared);
    `oracle` is a `reward.RewardOracle` (mean reward omitted when None)."""
    q_samples = q.sample(config.n_samples, config.max_new_tokens, 1.0, seed=config.seed)
    row = {
        "overall_precision": per_token_mean(p_star, q_samples),
        "overall_recall": per_token_mean(q, recall_samples),
        "target_precision": per_token_mean(p_target, q_samples),
        "response_length": float(q_samples.response_lengths.double().mean()),
    }
    if oracle is not None:
        row["reward"] = float(oracle.reward(q_samples).double().mean())
    if target_topic is not None and isinstance(p_star, MarkovMixture):
        row["target_share"] = target_share(p_star, q_samples, target_topic)
    return row


def token_counts(samples: Samples, vocab_size: int) -> torch.Tensor:
    """How often each token occurs among the response tokens (EOS included) of `samples`, [V] float64."""
    tokens = samples.tokens[samples.response_mask]
    if len(tokens) and int(tokens.max()) >= vocab_size:
        raise ValueError(f"token id {int(tokens.max())} is outside a vocabulary of {vocab_size} tokens")
    return torch.bincount(tokens, minlength=vocab_size).double()


def leave_one_out_loglik(counts: torch.Tensor, alpha: float, support: int) -> float:
    """Σ_w c_w·log((c_w − 1 + α) / (N − 1 + α·S)): each token scored by the add-α unigram of all the others."""
    seen = counts[counts > 0]
    n = float(counts.sum())
    return float((seen * (torch.log(seen - 1 + alpha) - math.log(n - 1 + alpha * support))).sum())


def leave_one_out_alpha(counts: torch.Tensor, support: int, grid: torch.Tensor | None = None) -> float:
    """The add-α of highest leave-one-out log-likelihood (`grid`: candidate α, default 10^−6 … 10^2).

    Uses the dataset alone, so the baseline sees exactly what a student sees. α → 0 would give every
    token seen once probability 0 in its own leave-one-out term, so singletons keep α away from 0."""
    grid = torch.logspace(-6, 2, 161, dtype=torch.float64) if grid is None else grid
    scores = [leave_one_out_loglik(counts, float(a), support) for a in grid]
    return float(grid[max(range(len(scores)), key=scores.__getitem__)])


class UnigramModel(LanguageModel):
    """p(x) = Π_t u(x_t): every response token drawn independently from the add-α smoothed token
    frequencies of a dataset, u(w) = (c_w + α) / (N + α·S) on the S tokens of the language (the ground
    truth's suppressed ids get 0). Scores responses like any `LanguageModel`, so its recall is measured
    on the same tokens as a student's. It scores; it does not sample (nothing here needs its samples)."""

    def __init__(self, log_probs: torch.Tensor, like: LanguageModel, alpha: float):
        self.log_probs, self.alpha = log_probs, alpha
        self.tokenizer, self.prompt_ids = like.tokenizer, list(like.prompt_ids)
        self.eos_id, self.pad_id, self.vocab_size = like.eos_id, like.pad_id, like.vocab_size
        self.suppress_ids = list(like.suppress_ids)

    @staticmethod
    def fit(data: Samples, like: LanguageModel, alpha: float | None = None) -> "UnigramModel":
        """The unigram of `data`'s response tokens on `like`'s vocabulary (`alpha` None: leave-one-out)."""
        counts = token_counts(data, like.vocab_size)
        support = torch.ones(like.vocab_size, dtype=torch.bool)
        support[list(like.suppress_ids)] = False
        if counts[~support].any():
            raise ValueError("the data hold tokens that the ground truth suppresses")
        if not counts.sum():
            raise ValueError("UnigramModel.fit: the data hold no response tokens")
        s = int(support.sum())
        if alpha is None:
            alpha = leave_one_out_alpha(counts, s)
        elif alpha < 0 or (alpha == 0 and (counts[support] == 0).any()):
            raise ValueError(f"alpha = {alpha}: must be > 0 when a token of the language is unseen (>= 0 otherwise)")
        probs = torch.where(support, (counts + alpha) / (counts.sum() + alpha * s), torch.zeros((), dtype=torch.float64))
        return UnigramModel(probs.log(), like, float(alpha))

    def log_prob(self, samples, *, batch_size=256):
        samples = samples.to(self.log_probs.device)
        keep = samples.response_mask
        per_position = torch.where(keep, self.log_probs[samples.tokens], torch.zeros((), dtype=torch.float64))
        total = per_position.sum(1)
        n_tokens = keep.sum(1)
        return SequenceScores(total.float(), (total / n_tokens.clamp(min=1)).float(), n_tokens)


def uniform_recall(p_star: LanguageModel) -> float:
    """Per-token recall of a uniform guess over the language's tokens: −log(V − suppressed)."""
    return -math.log(p_star.vocab_size - len(set(p_star.suppress_ids)))
