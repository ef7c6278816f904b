"""Align → PAD on the Mixture-of-Gaussians testbed: a third pipeline next to K-A and A-K (SPEC §5).

Modules: `student` (tempered sampling, fresh students), `training` (PADConfig, the PAD step and loop),
`comparison` (K-A, A-K and Align → PAD on the same trials, cached), `report` (final models, paired gaps,
figures); chapter 07's tables and words are `alignkd.chapters.ch07_pad`'s.

Pipeline A-K aligns the high-recall p' (reference p') into p'_AK and then distils p'_AK into the compact
size by KD (sample the teacher, fit the student by maximum likelihood). Align → PAD replaces that KD step
by Preference-Aligned Distillation (Gu et al. 2025, §4): the teacher is the same aligned p'_AK, and at
every step

1. the student q_θ draws `batch_size` points at temperature τ (PAD §4.1: τ = 0.8), cut into groups of
   `n_responses` (a "prompt" and its n responses; the MoG has one constant prompt);
2. every point gets two rewards, the teacher's log p'_AK(x) and the student's log q_θ(x): PAD's reward is
   the length-normalised log-likelihood (§3, eq. 7) and a 2-D point is one "token", so it is the log-density;
3. the student takes an Adam step on the PPD loss (Jensen–Shannon between the two Plackett–Luce
   distributions over the n! rankings of each group) or the VPD loss (NLL of the teacher's ranking),
   back-propagated through log q_θ(x) at the (fixed) sampled points, as PAD does through the student's
   log-likelihood of its own responses.

There is no reference model and no oracle reward anywhere in PAD: the student never sees R(x), only the
teacher's density. The learning trap (a reverse-KL or DPO offset to a low-recall reference) is gone;
the sampling trap is not, since the student only ever ranks its own samples.
"""

from .comparison import Comparison, cached_comparison, pad_label, run_comparison
from .report import comparison_boxplots, final_models, paired_gaps, trajectory_plot
from .student import fresh_student, tempered
from ..losses import STUDENT_INITS
from .training import PADConfig, PADRun, align_then_pad, pad_step_loss, train

__all__ = ["PADConfig", "PADRun", "STUDENT_INITS", "Comparison", "tempered", "fresh_student", "pad_step_loss", "train",
           "align_then_pad", "pad_label", "run_comparison", "cached_comparison", "final_models",
           "comparison_boxplots", "trajectory_plot", "paired_gaps"]
