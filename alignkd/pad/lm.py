"""Align → PAD on the language-model testbed (SPEC §5, PAD §4).

Teacher: the aligned high-recall model p'_AK of Pipeline A-K
(`alignkd.lm.experiments.cached_align(store, refs, "p'", ...)`).
Student: the compact model, either fresh (initialised exactly as KD initialises its students,
`make_student(size, ..., seed)`) or p'' (the compact KD model Pipeline K-A starts from). Each step:

1. the student (an `HFLanguageModel`: its prompt, EOS, padding and suppressed tokens) samples
   `groups_per_step` × n responses at temperature τ (PAD: 0.8), ancestral, no top-k / top-p;
2. rewards are per-token average log-likelihoods (PAD eq. 7, length-normalised; EOS counts as a token):
   the teacher's without gradient, the student's with gradient (`sequence_logprobs(..., grad=True)`);
   the teacher's are optionally calibrated with MCQ selection probabilities, r̂ = (1−α) r + α log p_sel
   (`calibration.py`; needs a natural-language teacher, so α = 0 on `markov_mixture`);
3. one Adam step on the PPD (Jensen–Shannon over the n! rankings) or VPD loss of each group, averaged.

No reference model and no oracle reward enter PAD. The learning rate defaults to the KD stage's (App. C.2,
5e-4): PAD replaces A-K's KD step, so it gets that step's optimiser, not an alignment step's.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..cache import ResultStore
from ..lm.experiments import Aligned, References, cached_align, load_model, save_model
from ..lm.generation import sequence_logprobs
from ..lm.models import HFLanguageModel, LanguageModel
from ..lm.students import STUDENT_SIZES, make_student
from ..validation import require_int, require_positive
from .calibration import ORDERS, calibrate, selection_log_probs
from .losses import STUDENT_INITS, PADObjective, pad_loss



@dataclass(frozen=True)
class LMPADConfig(PADObjective):
    """PAD for causal LMs; defaults from PAD (Gu et al. 2025) and the KD stage of App. C.2. `student_init`
    "fresh" is a new `student_size` model initialised as KD initialises it."""

    n_iterations: int = 300
    """Sample-and-update iterations (the LM chapter's alignment budget, 300 steps)."""
    groups_per_step: int = 16
    """Groups of n responses per step: 16 × 4 = 64 responses, the alignment batch of App. C.3."""
    max_new_tokens: int = 24
    """Response length cap (the metrics' cap)."""
    learning_rate: float = 5e-4
    """Adam learning rate (the KD stage's, App. C.2)."""
    alpha: float = 0.0
    """MCQ calibration weight α (PAD: 0.8); > 0 needs a teacher with option letters in its vocabulary."""
    calibration_order: str = "cyclic"
    """Option orders averaged for p_sel: cyclic (position bias cancels exactly), random, fixed."""
    question: str = "Continue the text."
    """The MCQ question shown before the options."""
    student_size: str = "tiny"
    """Architecture of a fresh student (the size of p'' in the LM chapter)."""
    seed: int = 0
    """Sampling seeds and the fresh student's initialisation."""

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "learning_rate")
        require_int(self, "n_iterations", "groups_per_step", "max_new_tokens")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha = {self.alpha!r}: must be in [0, 1]")
        if self.calibration_order not in ORDERS:
            raise ValueError(f"calibration_order = {self.calibration_order!r}: must be one of {', '.join(ORDERS)}")
        if self.student_size not in STUDENT_SIZES:
            raise ValueError(f"student_size = {self.student_size!r}: must be one of {', '.join(STUDENT_SIZES)}")


def teacher_rewards(teacher, samples, config: LMPADConfig) -> torch.Tensor:
    """Per-token average log-likelihood under the teacher (a `LanguageModel`), MCQ-calibrated if α > 0."""
    with torch.no_grad():
        rewards = teacher.log_prob(samples).per_token.float()
    if config.alpha == 0.0:
        return rewards
    texts = samples.texts(teacher.tokenizer)
    n = config.n_responses
    grouped = [texts[i:i + n] for i in range(0, len(texts), n)]
    generator = torch.Generator().manual_seed(config.seed)
    with teacher.placement.autocast():
        log_p_sel = selection_log_probs(teacher.model, teacher.tokenizer, config.question, grouped,
                                        order=config.calibration_order, generator=generator).reshape(-1)
    return calibrate(rewards, log_p_sel, config.alpha)


def train_pad(student: HFLanguageModel, teacher: LanguageModel, config: LMPADConfig, *,
              progress: bool = False) -> pd.DataFrame:
    """Train `student.model` in place by PAD against `teacher` (a `LanguageModel`).

    Returns a per-step log: loss, mean teacher and student rewards of the samples, `top1_agreement`
    (share of groups whose best response is the same for student and teacher) and the mean response length.
    """
    if config.alpha > 0 and getattr(teacher, "tokenizer", None) is None:
        raise ValueError("alpha > 0 needs the teacher's tokenizer for MCQ prompts")
    n, groups = config.n_responses, config.groups_per_step
    optimizer = torch.optim.Adam(student.model.parameters(), lr=config.learning_rate)
    log = []
    for step in tqdm(range(1, config.n_iterations + 1), desc=f"PAD {config.loss}", disable=not progress, leave=False):
        samples = student.sample(groups * n, config.max_new_tokens, config.tau, batch_size=groups * n,
                                 seed=config.seed * 1_000_003 + step)
        teacher_scores = teacher_rewards(teacher, samples, config).reshape(groups, n)
        student.model.train()
        with student.placement.autocast():
            student_scores = sequence_logprobs(student.model, samples, grad=True,
                                               batch_size=groups * n).per_token.reshape(groups, n)
        loss = pad_loss(config.loss, student_scores, teacher_scores, config.beta, config.group_size).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            top1 = (student_scores.argmax(-1) == teacher_scores.argmax(-1)).float().mean()
        log.append({"step": step, "loss": loss.item(), "teacher_reward": teacher_scores.mean().item(),
                    "student_reward": student_scores.mean().item(), "top1_agreement": top1.item(),
                    "response_length": samples.response_lengths.float().mean().item()})
    student.model.eval()
    return pd.DataFrame(log)


def initial_student(config: LMPADConfig, like: LanguageModel, p_low: HFLanguageModel | None = None) -> HFLanguageModel:
    """The student before PAD, with `like`'s prompt and ids: fresh (`make_student` as KD does, seed
    `config.seed`) or a copy of p''."""
    if config.student_init == "p_low":
        if p_low is None:
            raise ValueError("student_init = 'p_low' needs the p'' model")
        return like.wrap(copy.deepcopy(p_low.model))
    return like.wrap(make_student(config.student_size, like.vocab_size, bos_id=like.bos_id, eos_id=like.eos_id,
                                  pad_id=like.pad_id, max_positions=max(64, len(like.prompt_ids) + config.max_new_tokens + 1),
                                  seed=config.seed))


@dataclass(frozen=True)
class PADStudent:
    """The recipe of a PAD student (its cache key, as `alignkd.lm.experiments`' recipes)."""

    teacher: Aligned
    pad: LMPADConfig
    start: Any
    """The recipe of p'' for `student_init = "p_low"`, else "fresh"."""


@dataclass(frozen=True)
class PADResult:
    """Align → PAD over seeds: metric rows in the format of `PipelineResult.metrics`, and per-step PAD logs."""

    metrics: pd.DataFrame
    logs: pd.DataFrame


def cached_align_then_pad(store: ResultStore, refs: References, alignment, seeds: list[int], config: LMPADConfig, *,
                   label: str | None = None, progress: bool = True) -> PADResult:
    """Align → PAD for several alignment seeds (cached in `store`).

    The teacher of seed s is the A-K alignment of that seed (`experiments.cached_align(store, refs, "p'", ...)`, the
    same cached model as Pipeline A-K's); PAD runs with seed s. `label` names the algorithm column
    (default: the algorithm's name), as `cached_run_pipelines` does.
    """
    metrics, logs = [], []
    for seed in tqdm(seeds, desc="Align→PAD seeds", disable=not progress):
        teacher = cached_align(store, refs, "p'", alignment, seed, progress=progress)
        pad_config = dataclasses.replace(config, seed=seed)
        recipe = PADStudent(teacher.recipe, pad_config, refs.recipes["p''"] if pad_config.student_init == "p_low"
                            else "fresh")

        def build(tmp: Path) -> None:
            student = initial_student(pad_config, refs.p_star, refs.models["p''"])
            log = train_pad(student, teacher.model, pad_config, progress=progress)
            save_model(student.model, tmp / "student")
            log.to_parquet(tmp / "log.parquet")

        folder = store.directory("lm_pad", recipe, build)
        pipeline = f"A→PAD ({pad_config.loss}, {pad_config.student_init})"
        metrics.append({"algorithm": label or teacher.recipe.algorithm, "seed": seed, "pipeline": pipeline,
                        "model": "p''_PAD", "final_tau": float("nan"),
                        **refs.evaluate(load_model(folder / "student", refs.p_star))})
        logs.append(pd.read_parquet(folder / "log.parquet").assign(seed=seed, pipeline=pipeline))
    return PADResult(pd.DataFrame(metrics), pd.concat(logs, ignore_index=True))



# --------------------------------------------------------------------------- the chapter's figure


def comparison_figure(rows: pd.DataFrame):
    """Per seed recall against target precision (left) and final reward, mean ± sd over seeds (right), of every
    model in `rows` (one row per model and seed with a `name` column, as chapter 07 builds them; the bars
    show the rows with a seed >= 0)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2), constrained_layout=True)
    sns.scatterplot(data=rows, x="overall_recall", y="target_precision", hue="name", style="name", s=50, ax=axes[0])
    axes[0].set(xlabel="recall (nats/token)", ylabel="target precision (nats/token)")
    axes[0].legend(fontsize=6, frameon=False)
    sns.barplot(data=rows[rows.seed >= 0], x="name", y="reward", errorbar="sd", ax=axes[1])
    axes[1].set(xlabel="", ylabel="final reward")
    axes[1].tick_params(axis="x", rotation=35, labelsize=7)
    return fig


__all__ = ["LMPADConfig", "STUDENT_INITS", "PADResult", "PADStudent", "teacher_rewards", "train_pad",
           "initial_student", "align_then_pad", "comparison_figure"]
