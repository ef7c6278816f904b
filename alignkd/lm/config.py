"""What defines one LLM experiment, and how a chapter's parameters become it.

    config = chapter_config(params)            # LLMConfig: ground truth, KD stages, metrics
    alignments = chapter_alignments(params)    # {algorithm name: its config}

`params` are chapter 06's parameters (`notebooks/06_llm.md`) by name. A chapter that builds on its
models (chapter 07's language-model section) reads them with `llm_chapter_params(profile)` and calls
the same functions, so both chapters name the same cached models whatever the profile says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..chapters import find_chapter, resolve
from .algorithms import alignment_config, find_algorithm
from .device import Placement
from .groundtruth import MarkovMixtureConfig
from .kd import KDDataConfig, TrainConfig
from .metrics import MetricConfig


@dataclass(frozen=True)
class StageConfig:
    """One KD stage: how the teacher is sampled and how the student is trained."""

    data: KDDataConfig = KDDataConfig()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class LLMConfig:
    """Everything that defines the reference models, the oracle and the metrics of one experiment."""

    ground_truth: str = "markov_mixture"
    """`markov_mixture`, `hf:<model id or local path>` or `gguf:smollm2`."""
    markov: MarkovMixtureConfig = MarkovMixtureConfig()
    """The synthetic language (ignored for other ground truths)."""
    prompt: str = "The"
    """Prompt of every sample for real LMs (paper: "The"); the synthetic language starts from <bos>."""
    high_recall: StageConfig = StageConfig(KDDataConfig(tau=1.0), TrainConfig(size="small"))
    """p' from p* (App. C.2: τ = 1.0, SmolLM2-360M)."""
    low_recall: StageConfig = StageConfig(KDDataConfig(tau=0.95, tau_topic=0.7), TrainConfig(size="tiny"))
    """p'' from p' (τ = 0.95, SmolLM2-135M); also the settings of A-K's final KD."""
    target: StageConfig = StageConfig(KDDataConfig(tau=0.8), TrainConfig(size="tiny"))
    """p_target from p' (τ = 0.8) for real LMs; unused under markov_mixture (the exact rare topic)."""
    final_taus: tuple[float, ...] = (0.95,)
    """Token temperatures of A-K's final KD (App. D sweeps 0.925 / 0.975); the first is the main one."""
    n_fold_samples: int = 2000
    """p_target samples that set the folding threshold τ_f (90th percentile of R_base, App. C.3)."""
    n_recall_samples: int = 2000
    """p* samples on which every model's recall is measured."""
    metrics: MetricConfig = MetricConfig()
    device: str = "cpu"
    """Where every model of the experiment lives and computes (`cpu`, `cuda`): p*, the students, the
    references, p_target and the oracle; the alignment and KD configs carry the same device."""
    bf16: bool = False
    """bf16 autocast for every forward pass of p* and the students (sampling, scoring, evaluation), on
    CUDA or the CPU; master weights stay float32."""

    def __post_init__(self):
        if not (self.ground_truth == "markov_mixture" or self.ground_truth.startswith("hf:")
                or self.ground_truth == "gguf:smollm2"):
            raise ValueError(f"LLMConfig.ground_truth = '{self.ground_truth}' (allowed: markov_mixture, "
                             f"hf:<model id or path>, gguf:smollm2)")
        if not self.final_taus or any(t <= 0 for t in self.final_taus):
            raise ValueError(f"LLMConfig.final_taus = {self.final_taus}: a non-empty list of temperatures > 0")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"LLMConfig.device = '{self.device}' (allowed: cpu, cuda)")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("LLMConfig.device = 'cuda' but no GPU is visible (use the quick/default profiles on CPU)")
        for stage in (self.high_recall, self.low_recall, self.target):
            if (stage.train.device, stage.train.bf16) != (self.device, self.bf16):
                raise ValueError(f"LLMConfig: a KD stage trains on device = {stage.train.device!r}, bf16 = "
                                 f"{stage.train.bf16} but the experiment's models live on device = {self.device!r}, "
                                 f"bf16 = {self.bf16}: set TrainConfig(device=..., bf16=...) to match")
        if self.ground_truth != "markov_mixture":
            for stage in (self.high_recall, self.low_recall):
                if stage.data.tau_topic != 1.0:
                    raise ValueError(f"tau_topic = {stage.data.tau_topic}: topic sharpening needs the markov_mixture "
                                     f"ground truth (real LMs have no topic labels); set tau_topic = 1")

    @property
    def exact(self) -> bool:
        return self.ground_truth == "markov_mixture"

    @property
    def placement(self) -> Placement:
        return Placement.of(self.device, self.bf16)


LLM_CHAPTER = "06_llm"


def llm_chapter_params(profile: str) -> dict[str, Any]:
    """Chapter 06's parameter values under `profile`: the notebook's defaults, then the profile file's."""
    chapter = find_chapter(LLM_CHAPTER)
    return {**{name: p.default for name, p in chapter.parameters.items()}, **resolve(chapter, profile)}


# Chapter 06's SmolLM2 section: p' and p'' distilled from the offline SmolLM2-135M-Instruct, at what one CPU
# thread affords (sampling p* is the main cost), their recall set beside the baselines (`alignkd.lm.smollm2`).
SMOLLM2_BATCH = 16
SMOLLM2_MAX_RECALL = 256


def _smollm2_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {**params, "ground_truth": "gguf:smollm2", "n_high": params["smollm2_samples"],
            "n_low": params["smollm2_samples"] // 2, "max_new_tokens": params["smollm2_max_new_tokens"],
            "tau_topic": 1.0, "n_eval": min(params["n_eval"], SMOLLM2_MAX_RECALL), "kd_epochs": params["smollm2_epochs"],
            "kd_lr": params["smollm2_lr"], "kd_batch": SMOLLM2_BATCH}


def chapter_config(params: Mapping[str, Any], *, smollm2: bool = False) -> LLMConfig:
    """The `LLMConfig` of chapter 06's parameters (`smollm2=True`: its SmolLM2 section's)."""
    if smollm2:
        params = _smollm2_params(params)
    length, n_low = params["max_new_tokens"], params["n_low"]

    def train(size: str, n_samples: int) -> TrainConfig:  # early stopping holds out at most a fifth of the data
        return TrainConfig(size=size, epochs=params["kd_epochs"], learning_rate=params["kd_lr"],
                           batch_size=params["kd_batch"], bf16=params["bf16"], device=params["device"],
                           validation_size=min(params["kd_validation"], n_samples // 5),
                           early_stopping_patience=params["kd_patience"],
                           early_stopping_threshold=params["kd_threshold"])

    return LLMConfig(
        ground_truth=params["ground_truth"],
        markov=MarkovMixtureConfig(vocab_size=params["vocab_size"], n_topics=params["n_topics"],
                                   topic_markers=params["topic_markers"]),
        high_recall=StageConfig(KDDataConfig(n_samples=params["n_high"], max_new_tokens=length, tau=params["tau_high"],
                                             batch_size=params["sample_batch"]),
                                train(params["high_size"], params["n_high"])),
        low_recall=StageConfig(KDDataConfig(n_samples=n_low, max_new_tokens=length, tau=params["tau_low"],
                                            tau_topic=params["tau_topic"], batch_size=params["sample_batch"]),
                               train(params["low_size"], n_low)),
        target=StageConfig(KDDataConfig(n_samples=n_low, max_new_tokens=length, tau=params["tau_target"],
                                        batch_size=params["sample_batch"]), train(params["low_size"], n_low)),
        final_taus=tuple(params["final_taus"]), n_fold_samples=params["n_eval"], n_recall_samples=params["n_eval"],
        metrics=MetricConfig(n_samples=params["n_eval"], max_new_tokens=length), device=params["device"],
        bf16=params["bf16"])


# Which of chapter 06's parameters set which fields of each algorithm's config, by registry name (`p`: the
# chapter's parameters). Every algorithm also gets n_iterations, batch_size, max_new_tokens, eval_every, device and
# bf16. The DPO-like methods share DPO's learning rate and steps, and see the same responses per gradient step
# (8 pairs = 16 responses). SimPO takes no `beta` from the chapter: there it scales a reference-free per-token margin,
# not a KL strength, so it keeps `SimPOConfig`'s own.
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


def chapter_alignments(params: Mapping[str, Any]) -> dict[str, Any]:
    """Chapter 06's alignment configs by algorithm name (`params["algorithms"]`, names of
    `alignkd.lm.algorithms.ALGORITHMS`), their settings from `ALGORITHM_PARAMETERS`."""
    shared = dict(n_iterations=params["iterations"], batch_size=params["batch_size"],
                  max_new_tokens=params["max_new_tokens"], eval_every=params["eval_every"], device=params["device"],
                  bf16=params["bf16"])
    configs = {}
    for label in params["algorithms"]:
        find_algorithm(label)  # an unknown name fails as the registry words it: `algorithm = '...'`
        if label not in ALGORITHM_PARAMETERS:  # a new algorithm must say which parameters it takes, not inherit PPO's
            raise ValueError(f"algorithm '{label}' has no row in alignkd.lm.config.ALGORITHM_PARAMETERS "
                             f"(known: {', '.join(ALGORITHM_PARAMETERS)})")
        configs[label] = alignment_config(label, **shared, **ALGORITHM_PARAMETERS[label](params))
    return configs
