"""Chapter 06 (`notebooks/06_llm.md`): the LLM experiment's parameters become its configs here.

    config = ch06_llm.config(ground_truth=..., vocab_size=..., ...)        # LLMConfig: p*, KD stages, metrics
    alignments = ch06_llm.alignments(algorithms=..., iterations=..., ...)  # {algorithm name: its config}

Chapter 07's language-model section asks for the same configs with `profile_call(config, CHAPTER, profile)`,
so both chapters name the same cached models whatever the profile says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..lm.algorithms import alignment_config, find_algorithm
from ..lm.config import LLMConfig, StageConfig
from ..lm.groundtruth import MarkovMixtureConfig
from ..lm.kd import KDDataConfig, TrainConfig
from ..lm.metrics import MetricConfig

PARAMETER_FUNCTIONS = ("config", "smollm2_config", "alignments", "final_kd_taus")  # take the chapter's parameters by name
CHAPTER = "06_llm"

# The SmolLM2 section distils p' and p'' from the offline SmolLM2-135M-Instruct at what one CPU thread affords
# (sampling p* is the main cost), and sets their recall beside the baselines (`alignkd.lm.smollm2`).
SMOLLM2_BATCH = 16
SMOLLM2_MAX_RECALL = 256


def config(*, ground_truth: str, vocab_size: int, n_topics: int, topic_markers: int, max_new_tokens: int,
           high_size: str, low_size: str, n_high: int, n_low: int, kd_epochs: float, kd_patience: int,
           kd_threshold: float, kd_validation: int, kd_lr: float, kd_batch: int, sample_batch: int, tau_high: float,
           tau_low: float, tau_target: float, tau_topic: float, final_taus: list[float], n_eval: int, device: str,
           bf16: bool) -> LLMConfig:
    """The experiment's `LLMConfig`: p*, the three KD stages (p', p'', p_target), A-K's final KD temperatures and
    the metrics."""

    def train(size: str, n_samples: int) -> TrainConfig:  # early stopping holds out at most a fifth of the data
        return TrainConfig(size=size, epochs=kd_epochs, learning_rate=kd_lr, batch_size=kd_batch, bf16=bf16,
                           device=device, validation_size=min(kd_validation, n_samples // 5),
                           early_stopping_patience=kd_patience, early_stopping_threshold=kd_threshold)

    def data(n_samples: int, tau: float, tau_topic: float = 1.0) -> KDDataConfig:
        return KDDataConfig(n_samples=n_samples, max_new_tokens=max_new_tokens, tau=tau, tau_topic=tau_topic,
                            batch_size=sample_batch)

    return LLMConfig(
        ground_truth=ground_truth,
        markov=MarkovMixtureConfig(vocab_size=vocab_size, n_topics=n_topics, topic_markers=topic_markers),
        high_recall=StageConfig(data(n_high, tau_high), train(high_size, n_high)),
        low_recall=StageConfig(data(n_low, tau_low, tau_topic), train(low_size, n_low)),
        target=StageConfig(data(n_low, tau_target), train(low_size, n_low)),
        final_taus=tuple(final_taus), n_fold_samples=n_eval, n_recall_samples=n_eval,
        metrics=MetricConfig(n_samples=n_eval, max_new_tokens=max_new_tokens), device=device, bf16=bf16)


def smollm2_config(reference: Mapping[str, Any], *, smollm2_samples: int, smollm2_max_new_tokens: int,
                   smollm2_epochs: float, smollm2_lr: float) -> LLMConfig:
    """The SmolLM2 section's `LLMConfig`: `config`'s parameters (`reference`: the keyword arguments of `config`)
    with p* the offline SmolLM2-135M-Instruct, the section's own sample counts, length, epochs and learning rate,
    and no topic sharpening."""
    section = dict(ground_truth="gguf:smollm2", n_high=smollm2_samples, n_low=smollm2_samples // 2,
                   max_new_tokens=smollm2_max_new_tokens, tau_topic=1.0,
                   n_eval=min(reference["n_eval"], SMOLLM2_MAX_RECALL), kd_epochs=smollm2_epochs, kd_lr=smollm2_lr,
                   kd_batch=SMOLLM2_BATCH)
    return config(**{**reference, **section})


# Which of the chapter's parameters set which fields of each algorithm's config, by registry name (`p`: the
# parameters of `alignments`). Every algorithm also gets n_iterations, batch_size, max_new_tokens, eval_every,
# device and bf16. The DPO-like methods share DPO's learning rate and steps, and see the same responses per gradient
# step (8 pairs = 16 responses). SimPO takes no `beta` from the chapter: there it scales a reference-free per-token
# margin, not a KL strength, so it keeps `SimPOConfig`'s own.
ALGORITHM_PARAMETERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "ppo": lambda p: dict(beta=p["beta"], learning_rate=p["ppo_lr"], mini_batch_size=max(1, p["batch_size"] // 8)),
    "dpo_online": lambda p: dict(beta=p["beta"], learning_rate=p["dpo_lr"], grad_steps=p["dpo_grad_steps"],
                                 pairs_per_step=min(8, p["batch_size"] // 2)),
    "grpo": lambda p: dict(beta=p["beta"], learning_rate=p["ppo_lr"]),
    "grpo_reward": lambda p: dict(beta=p["beta"], learning_rate=p["ppo_lr"]),
    "kto": lambda p: dict(beta=p["beta"], learning_rate=p["dpo_lr"], grad_steps=p["dpo_grad_steps"],
                          examples_per_step=min(16, p["batch_size"])),
    "simpo": lambda p: dict(learning_rate=p["dpo_lr"], grad_steps=p["dpo_grad_steps"],
                            pairs_per_step=min(8, p["batch_size"] // 2)),
}


def alignments(*, algorithms: list[str], iterations: int, batch_size: int, max_new_tokens: int, eval_every: int,
               device: str, bf16: bool, beta: float, ppo_lr: float, dpo_lr: float,
               dpo_grad_steps: int) -> dict[str, Any]:
    """The alignment configs by algorithm name (names of `alignkd.lm.algorithms.ALGORITHMS`), their settings from
    `ALGORITHM_PARAMETERS`; an algorithm without a row there is refused, not given another's settings."""
    shared = dict(n_iterations=iterations, batch_size=batch_size, max_new_tokens=max_new_tokens, eval_every=eval_every,
                  device=device, bf16=bf16)
    tuning = dict(beta=beta, ppo_lr=ppo_lr, dpo_lr=dpo_lr, dpo_grad_steps=dpo_grad_steps, batch_size=batch_size)
    configs = {}
    for label in algorithms:
        find_algorithm(label)  # an unknown name fails as the registry words it: `algorithm = '...'`
        if label not in ALGORITHM_PARAMETERS:
            raise ValueError(f"algorithm '{label}' has no row in alignkd.chapters.ch06_llm.ALGORITHM_PARAMETERS "
                             f"(known: {', '.join(ALGORITHM_PARAMETERS)})")
        configs[label] = alignment_config(label, **shared, **ALGORITHM_PARAMETERS[label](tuning))
    return configs


def final_kd_taus(*, algorithms: list[str], final_taus: list[float],
                  tau_sweep_algorithms: list[str]) -> dict[str, list[float]]:
    """A-K's final-KD temperatures per algorithm: every one of `final_taus` for the algorithms App. D sweeps
    (`tau_sweep_algorithms`), the first (the main one) for the others."""
    return {label: list(final_taus) if label in tau_sweep_algorithms else list(final_taus[:1]) for label in algorithms}
