"""PAD on the MoG testbed: its settings, one PAD step's loss, the batched training loop, and Align → PAD's last step.

At every step the student q_θ draws `batch_size` points at temperature τ (PAD §4.1), cut into groups of
`n_responses`; each point's teacher and student rewards are their log-densities (a 2-D point is a one-token
response, so PAD's length-normalised log-likelihood is the log-density), and the student takes an Adam step on
the PPD or VPD loss of `alignkd.pad.losses`, back-propagated through log q_θ(x) at the fixed sampled points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ...mog.mixture import Mixture, generators
from ...mog.pipelines import Setup
from ...validation import require_int, require_positive
from ..losses import PADObjective, pad_loss
from .student import fresh_student, tempered


@dataclass(frozen=True)
class PADConfig(PADObjective):
    """PAD on the MoG testbed; defaults from PAD (Gu et al. 2025) and the paper's KD budget (App. A.1). A 2-D
    point is a one-token response; `student_init` "fresh" is a compact mixture initialised as sft.fit does
    (equal weights, means uniform in [−2, 2]², std 0.5, from the trial's own stream)."""

    n_iterations: int = 2000
    """Adam steps: the KD budget of A-K's last step (App. A.1: 2000), so the two final steps cost alike."""
    batch_size: int = 256
    """Student samples per step and row (App. A.2's 256), i.e. batch_size / n_responses groups."""
    learning_rate: float = 1e-2
    """Adam learning rate (App. A.2: 1e-2, as for every other MoG optimiser)."""

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "learning_rate")
        require_int(self, "n_iterations", minimum=0)
        require_int(self, "batch_size")
        if self.batch_size % self.n_responses:
            raise ValueError(f"batch_size = {self.batch_size}: must be a multiple of n_responses = {self.n_responses}")


@dataclass
class PADRun:
    """Snapshots {iteration: student rows} and the per-row training loss at every iteration."""

    snapshots: dict[int, Mixture]
    loss_history: torch.Tensor = field(repr=False)  # [n_iterations, rows]


def pad_step_loss(student: Mixture, teacher: Mixture, x: torch.Tensor, config: PADConfig) -> torch.Tensor:
    """[rows] PAD loss on points x [rows, batch, 2]: mean over the batch's groups of n responses."""
    n = config.n_responses
    with torch.no_grad():
        teacher_scores = teacher.log_prob(x).reshape(x.shape[0], -1, n)
    student_scores = student.log_prob(x).reshape(x.shape[0], -1, n)
    return pad_loss(config.loss, student_scores, teacher_scores, config.beta, config.group_size).mean(-1)


def train(teacher: Mixture, student: Mixture, config: PADConfig, seed: int, trials: Sequence[int],
          checkpoints: Sequence[int] = (), stage: str = "pad", progress: bool = False) -> PADRun:
    """Distil every row of `teacher` into the same row of `student` by PAD (rows = settings × trials).

    Each row samples from its own stream (seed, stage/sample, trial). Returns snapshots at `checkpoints`
    and at `config.n_iterations`.
    """
    if teacher.n_rows != student.n_rows:
        raise ValueError(f"teacher has {teacher.n_rows} rows, student {student.n_rows}")
    if len(trials) == 0 or student.n_rows % len(trials):
        raise ValueError(f"{student.n_rows} rows is not a multiple of {len(trials)} trials")
    points = sorted({int(c) for c in checkpoints} | {config.n_iterations})
    if points[0] < 0 or points[-1] > config.n_iterations:
        raise ValueError(f"checkpoints {list(checkpoints)}: must lie in 0..n_iterations = {config.n_iterations}")
    gens = generators(seed, f"{stage}/sample", list(trials), student.n_rows // len(trials))
    teacher = teacher.detach()
    student = student.trainable()
    optimizer = torch.optim.Adam(student.parameters(), lr=config.learning_rate)
    snapshots = {0: student.detach()} if 0 in points else {}
    history = torch.zeros(config.n_iterations, student.n_rows)
    for it in tqdm(range(1, config.n_iterations + 1), desc=f"PAD {stage}", disable=not progress, leave=False):
        x = tempered(student, config.tau).sample(config.batch_size, gens)
        loss = pad_step_loss(student, teacher, x, config)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # rows are independent: the sum gives each row its own gradient
        optimizer.step()
        history[it - 1] = loss.detach()
        if it in points:
            snapshots[it] = student.detach()
    return PADRun(snapshots, history)


def align_then_pad(aligned: Mixture, setup: Setup, config: PADConfig, p_low: Mixture | None = None,
                   checkpoints: Sequence[int] = (), stage: str = "", progress: bool = False) -> PADRun:
    """Align → PAD's last step: PAD from the aligned rows (settings × trials) into the compact size.

    The student has `setup.n_low_recall` components, as A-K's final model; with student_init "p_low" it
    starts from each trial's p'' (`p_low`, one row per trial, repeated over settings).
    """
    n_settings = aligned.n_rows // setup.n_trials
    if config.student_init == "p_low":
        if p_low is None or p_low.n_rows != setup.n_trials:
            raise ValueError("student_init = 'p_low' needs p_low with one row per trial")
        student = p_low.repeat(n_settings)
    else:
        student = fresh_student(setup.n_low_recall, setup.seed, setup.trials, n_settings, f"pad/{stage}")
    return train(aligned, student, config, setup.seed, setup.trials, checkpoints,
                 stage=f"pad/{stage}", progress=progress)
