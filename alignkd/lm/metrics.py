"""Metrics of the LLM testbed (paper §4.2, SPEC §4): per-token average log-likelihoods.

For a model q, ground truth p* and target p_target (all `LanguageModel`s):

- precision         = E_{x~q} [ log p*(x) / |x| ]          samples of q scored by p*
- recall            = E_{x~p*}[ log q(x)  / |x| ]          samples of p* scored by q
- target precision  = E_{x~q} [ log p_target(x) / |x| ]    samples of q scored by p_target
- mean reward       = E_{x~q} [ R(x) ]                      the folded oracle reward (App. C.3)

|x| is the number of response tokens (EOS included); each expectation is a Monte Carlo mean
over the stated number of sequences, and the mean of per-sequence averages (each sequence
weighs the same, as the per-sequence reward does). Under `markov_mixture` p* and p_target are
exact densities, and `target_mass` (the share of q's samples whose most likely topic is the
target topic) shows directly how much of the rare topic a model still produces.
"""

from __future__ import annotations

from dataclasses import dataclass

from .generation import Samples
from .groundtruth import LanguageModel, MarkovMixture


@dataclass(frozen=True)
class MetricConfig:
    n_samples: int = 2000
    """Samples of q (precision, target precision, reward); the recall set is fixed by the caller."""
    max_new_tokens: int = 24
    seed: int = 12345

    def __post_init__(self):
        if self.n_samples < 1 or self.max_new_tokens < 1:
            raise ValueError(f"MetricConfig: n_samples = {self.n_samples}, max_new_tokens = {self.max_new_tokens} must be >= 1")


def per_token_mean(model: LanguageModel, samples: Samples, batch_size: int = 512) -> float:
    """Mean over sequences of the per-token average log-probability of the response under `model`."""
    return float(model.log_prob(samples, batch_size=batch_size).per_token.double().mean())


def target_mass(p_star: MarkovMixture, samples: Samples, target_topic: int) -> float:
    """Share of `samples` whose most probable topic under p* is `target_topic` (markov_mixture only)."""
    return float((p_star.topic_posterior(samples).argmax(1) == target_topic).double().mean())


def evaluate(q: LanguageModel, *, p_star: LanguageModel, p_target: LanguageModel, recall_samples: Samples,
             config: MetricConfig = MetricConfig(), oracle=None, target_topic: int | None = None) -> dict[str, float]:
    """All metrics of one model. `recall_samples` are samples of p* (shared by every model compared);
    `oracle` is a `reward.RewardOracle` (mean reward omitted when None)."""
    q_samples = q.sample(config.n_samples, config.max_new_tokens, 1.0, seed=config.seed)
    row = {
        "precision": per_token_mean(p_star, q_samples),
        "recall": per_token_mean(q, recall_samples),
        "target_precision": per_token_mean(p_target, q_samples),
        "response_length": float(q_samples.response_lengths.double().mean()),
    }
    if oracle is not None:
        row["reward"] = float(oracle.reward(q_samples).double().mean())
    if target_topic is not None and isinstance(p_star, MarkovMixture):
        row["target_mass"] = target_mass(p_star, q_samples, target_topic)
    return row
