"""What defines one LLM experiment: the ground truth, the three KD stages, the metrics and where it all runs.

Chapter 06's parameters become an `LLMConfig` in `alignkd.chapters.ch06_llm`; this module knows no chapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
