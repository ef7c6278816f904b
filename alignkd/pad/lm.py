"""Align → PAD on the language-model testbed (SPEC §5, PAD §4).

Teacher: the aligned high-recall model p'_AK of Pipeline A-K (`alignkd.lm.pipeline.align(setup, "p'", ...)`).
Student: the compact model, either fresh (initialised exactly as KD initialises its students,
`make_student(size, ..., seed)`) or p'' (the compact KD model Pipeline K-A starts from). Each step:

1. the student samples `groups_per_step` × n responses from the prompt at temperature τ (PAD: 0.8),
   ancestral, no top-k / top-p (`alignkd.lm.generation.sample`);
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

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..lm.generation import sample, sequence_logprobs
from ..lm.students import STUDENT_SIZES, make_student
from ..validation import require_int, require_positive
from .calibration import ORDERS, calibrate, selection_log_probs
from .losses import check_pad_settings, pad_loss

STUDENT_INITS = ("fresh", "p_low")


@dataclass(frozen=True)
class LMPADConfig:
    """PAD for causal LMs; defaults from PAD (Gu et al. 2025) and the KD stage of App. C.2."""

    loss: str = "ppd"
    """"ppd" (JSD over all n! rankings) or "vpd" (NLL of the teacher's ranking)."""
    n_responses: int = 4
    """Responses per prompt n (PAD §5.1: 4); 2..8."""
    group_size: int | None = None
    """Preference decomposition: rank groups of this size (divides n); None = all n at once."""
    beta: float = 1.0
    """Plackett–Luce scale on the rewards."""
    tau: float = 0.8
    """Student sampling temperature τ (PAD §4.1: 0.8)."""
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
    student_init: str = "fresh"
    """"fresh": a new `student_size` model initialised as KD initialises it; "p_low": a copy of p''."""
    student_size: str = "tiny"
    """Architecture of a fresh student (the size of p'' in the LM chapter)."""
    seed: int = 0
    """Sampling seeds and the fresh student's initialisation."""

    def __post_init__(self):
        check_pad_settings(self.loss, self.n_responses, self.group_size)
        require_positive(self, "beta", "tau", "learning_rate")
        require_int(self, "n_iterations", "groups_per_step", "max_new_tokens")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha = {self.alpha!r}: must be in [0, 1]")
        if self.calibration_order not in ORDERS:
            raise ValueError(f"calibration_order = {self.calibration_order!r}: must be one of {', '.join(ORDERS)}")
        if self.student_init not in STUDENT_INITS:
            raise ValueError(f"student_init = {self.student_init!r}: must be one of {', '.join(STUDENT_INITS)}")
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
    log_p_sel = selection_log_probs(teacher.model, teacher.tokenizer, config.question, grouped,
                                    order=config.calibration_order, generator=generator).reshape(-1)
    return calibrate(rewards, log_p_sel, config.alpha)


def train_pad(student, teacher, config: LMPADConfig, *, prompt_ids, eos_id: int, pad_id: int,
              suppress_ids=(), progress: bool = False) -> tuple[torch.nn.Module, pd.DataFrame]:
    """Train `student` (a causal LM, updated in place) by PAD against `teacher` (a `LanguageModel`).

    Returns the student and a per-step log: loss, mean teacher and student rewards of the samples,
    `top1_agreement` (share of groups whose best response is the same for student and teacher) and
    the mean response length.
    """
    if config.alpha > 0 and getattr(teacher, "tokenizer", None) is None:
        raise ValueError("alpha > 0 needs the teacher's tokenizer for MCQ prompts")
    n, groups = config.n_responses, config.groups_per_step
    optimizer = torch.optim.Adam(student.parameters(), lr=config.learning_rate)
    log = []
    for step in tqdm(range(1, config.n_iterations + 1), desc=f"PAD {config.loss}", disable=not progress, leave=False):
        samples = sample(student, prompt_ids, groups * n, config.max_new_tokens, config.tau,
                         eos_id=eos_id, pad_id=pad_id, batch_size=groups * n, seed=config.seed * 1_000_003 + step,
                         suppress_ids=suppress_ids)
        teacher_scores = teacher_rewards(teacher, samples, config).reshape(groups, n)
        student.train()
        student_scores = sequence_logprobs(student, samples, grad=True, suppress_ids=suppress_ids,
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
    student.eval()
    return student, pd.DataFrame(log)


def initial_student(config: LMPADConfig, like, p_low=None):
    """The student before PAD: fresh (`make_student` as KD does, seed `config.seed`) or a copy of p''."""
    if config.student_init == "p_low":
        if p_low is None:
            raise ValueError("student_init = 'p_low' needs the p'' model")
        return copy.deepcopy(p_low.model if hasattr(p_low, "model") else p_low)
    bos = like.tokenizer.bos_token_id if like.tokenizer.bos_token_id is not None else like.prompt_ids[0]
    return make_student(config.student_size, like.vocab_size, bos_id=bos, eos_id=like.eos_id, pad_id=like.pad_id,
                        max_positions=max(64, len(like.prompt_ids) + config.max_new_tokens + 1), seed=config.seed)


def align_then_pad(setup, algorithm: str, algorithm_config, seeds: list[int], config: LMPADConfig, *,
                   progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Align → PAD for several alignment seeds on an `alignkd.lm.pipeline.Setup` (cached in its store).

    The teacher of seed s is the A-K alignment of that seed (`pipeline.align(setup, "p'", ...)`, the same
    cached model as Pipeline A-K's); PAD runs with seed s. Returns (metric rows in the format of
    `pipeline.run_pipelines`, per-step PAD logs).
    """
    from ..lm.pipeline import _load_student, align

    metrics, logs = [], []
    for seed in tqdm(seeds, desc="Align→PAD seeds", disable=not progress):
        teacher, _, _, teacher_key = align(setup, "p'", algorithm, algorithm_config, seed, progress=progress)
        pad_config = dataclasses.replace(config, seed=seed)
        key = {"teacher": teacher_key, "pad": pad_config,
               "student_start": setup.keys["p''"] if pad_config.student_init == "p_low" else "fresh"}

        def build(tmp: Path) -> None:
            student = initial_student(pad_config, setup.p_star, setup.models["p''"])
            student, log = train_pad(student, teacher, pad_config, prompt_ids=setup.p_star.prompt_ids,
                                     eos_id=setup.p_star.eos_id, pad_id=setup.p_star.pad_id,
                                     suppress_ids=setup.p_star.suppress_ids, progress=progress)
            student.cpu().float().save_pretrained(tmp / "student")
            log.to_parquet(tmp / "log.parquet")

        folder = setup.store.directory("lm_pad", key, build)
        student = _load_student(folder / "student", setup.p_star)
        label = f"A→PAD ({pad_config.loss}, {pad_config.student_init})"
        metrics.append({"algorithm": algorithm, "seed": seed, "pipeline": label, "model": "p''_PAD",
                        "final_tau": float("nan"), **setup.evaluate(student)})
        logs.append(pd.read_parquet(folder / "log.parquet").assign(seed=seed, pipeline=label))
    return pd.DataFrame(metrics), pd.concat(logs, ignore_index=True)


__all__ = ["LMPADConfig", "STUDENT_INITS", "teacher_rewards", "train_pad", "initial_student", "align_then_pad"]
