"""Align → PAD on the Mixture-of-Gaussians testbed: a third pipeline next to K-A and A-K (SPEC §5).

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

Temperature of a Gaussian mixture. For one Gaussian, q^{1/τ} normalised is exactly N(μ, τΣ). For a
mixture we temper each component exactly and keep the mass the tempered component would have,

    q_τ(x) = Σ_k w_k N(x; μ_k, τ Σ_k),   w_k ∝ ∫ (α_k N_k)^{1/τ} dx ∝ α_k^{1/τ} Π_d σ_{k,d}^{1 − 1/τ},

which equals q^{1/τ}/Z wherever the components do not overlap (tested on a grid). τ < 1 sharpens the
weights like β_KD = 1/τ and narrows every component by √τ; τ = 1 is q itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..mog.algorithms import ALGORITHMS, find_algorithm
from ..mog.alignment import check_betas
from ..mog.experiments import cached_from_references
from ..mog.groundtruth import SINGLE_TARGET, check_targets
from ..mog.metrics import evaluate
from ..mog.mixture import LOG_SCALE_MIN, Mixture, generators
from ..mog.pipelines import Setup, align, distil_rows, high_recall, low_recall
from ..mog.sft import SFTConfig
from ..validation import require_int, require_positive
from .losses import check_pad_settings, pad_loss

STUDENT_INITS = ("fresh", "p_low")


def tempered(q: Mixture, tau: float) -> Mixture:
    """The mixture q_τ of the module docstring: each component tempered exactly, weights by its tempered mass."""
    if not tau > 0:
        raise ValueError(f"tau = {tau!r}: must be > 0")
    log_scales = q.log_scales.detach().clamp(min=LOG_SCALE_MIN)
    logits = q.log_weights().detach() / tau + (1.0 - 1.0 / tau) * log_scales.sum(-1)
    return Mixture(logits, q.means.detach().clone(), log_scales + 0.5 * math.log(tau))


@dataclass(frozen=True)
class PADConfig:
    """PAD on the MoG testbed; defaults from PAD (Gu et al. 2025) and the paper's KD budget (App. A.1)."""

    loss: str = "ppd"
    """"ppd" (Jensen–Shannon over all n! rankings, PAD's main loss) or "vpd" (NLL of the teacher's ranking)."""
    n_responses: int = 4
    """Responses per prompt n (PAD §5.1: 4); 1 < n <= 8 here (n! rankings per group)."""
    group_size: int | None = None
    """Preference decomposition (PAD §4.4): rank groups of this size (must divide n); None = all n at once."""
    beta: float = 1.0
    """Plackett–Luce scale β on the rewards (log-densities), for teacher and student alike."""
    tau: float = 0.8
    """Student sampling temperature τ (PAD §4.1: 0.8); see `tempered`."""
    n_iterations: int = 2000
    """Adam steps: the KD budget of A-K's last step (App. A.1: 2000), so the two final steps cost alike."""
    batch_size: int = 256
    """Student samples per step and row (App. A.2's 256), i.e. batch_size / n_responses groups."""
    learning_rate: float = 1e-2
    """Adam learning rate (App. A.2: 1e-2, as for every other MoG optimiser)."""
    student_init: str = "fresh"
    """"fresh": a new compact mixture initialised exactly as KD initialises its students (sft.fit:
    equal weights, means uniform in [−2, 2]², std 0.5, from the trial's own stream); "p_low": start from
    p'', the compact KD model that Pipeline K-A aligns (the low-recall starting point)."""

    def __post_init__(self):
        check_pad_settings(self.loss, self.n_responses, self.group_size)
        require_positive(self, "beta", "tau", "learning_rate")
        require_int(self, "n_iterations", minimum=0)
        require_int(self, "batch_size")
        if self.batch_size % self.n_responses:
            raise ValueError(f"batch_size = {self.batch_size}: must be a multiple of n_responses = {self.n_responses}")
        if self.student_init not in STUDENT_INITS:
            raise ValueError(f"student_init = {self.student_init!r}: must be one of {', '.join(STUDENT_INITS)}")


@dataclass
class PADRun:
    """Snapshots {iteration: student rows} and the per-row training loss at every iteration."""

    snapshots: dict[int, Mixture]
    loss_history: torch.Tensor = field(repr=False)  # [n_iterations, rows]


def fresh_student(n_components: int, seed: int, trials: Sequence[int], n_settings: int, stage: str) -> Mixture:
    """A compact student initialised as `sft.fit` initialises KD students (stream (seed, stage/init, trial))."""
    init = SFTConfig(n_components=n_components, n_iterations=0)
    return Mixture.random_init(n_components, generators(seed, f"{stage}/init", list(trials), n_settings),
                               init.init_spread, init.init_scale)


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


@dataclass(frozen=True)
class Comparison:
    """K-A, A-K and Align → PAD for one alignment algorithm and β, on the same trials and budgets."""

    algorithm: str = "ppo"
    """Alignment algorithm of the first stage (ppo, grpo, dpo_online, dpo_offline)."""
    beta: float = 1.0
    """Alignment KL/DPO coefficient β (the paper's iteration sweeps use 1.0)."""
    align_iterations: int = 400
    """Alignment iterations, the same for K-A and for the shared first stage of A-K and Align → PAD."""
    targets: tuple[int, ...] = SINGLE_TARGET
    """Target modes of the oracle reward (single: (7,), multi: (7, 6))."""
    pad: tuple[PADConfig, ...] = (PADConfig(),)
    """One Align → PAD variant per entry (e.g. fresh and p'' initialisations, PPD and VPD)."""
    pad_checkpoints: tuple[int, ...] = ()
    """Extra PAD iterations at which to score the students (a trajectory)."""

    def __post_init__(self):
        find_algorithm(self.algorithm)
        check_betas([self.beta])
        check_targets(self.targets)
        require_int(self, "align_iterations")
        if not self.pad:
            raise ValueError("pad: need at least one PADConfig")


def pad_label(config: PADConfig) -> str:
    """A short name for a PAD variant, e.g. "A→PAD (ppd, fresh)"."""
    group = f", groups of {config.group_size}" if config.group_size not in (None, config.n_responses) else ""
    return f"A→PAD ({config.loss}, {config.student_init}{group})"


def run_comparison(comparison: Comparison, setup: Setup, p_high: Mixture | None = None,
                   p_low: Mixture | None = None, progress: bool = False) -> pd.DataFrame:
    """Score p', p'', K-A, A-K, p'_AK and every Align → PAD variant with the four metrics.

    One line per (pipeline, iterations, trial). The alignment stages use the same stage names as
    `pipelines.run_sweep`, so K-A, A-K and p'_AK are the very models of the algorithm chapters for the
    same setup, β and budget. PAD lines have `iterations` = PAD steps (a trajectory if
    `pad_checkpoints` is set); the others have the alignment budget (0 for p', p'').
    """
    p_high = high_recall(setup, progress) if p_high is None else p_high
    p_low = low_recall(p_high, setup, progress=progress) if p_low is None else p_low
    config = ALGORITHMS[comparison.algorithm].config(n_iterations=comparison.align_iterations)
    stage_targets = f"{comparison.algorithm}/{comparison.targets}"
    frames = []

    def score(models: Mixture, pipeline: str, iterations: int) -> None:
        metrics = evaluate(models, comparison.targets, setup.seed, setup.trials, setup.eval_samples)
        metrics.insert(0, "iterations", iterations)
        metrics.insert(0, "pipeline", pipeline)
        frames.append(metrics.drop(columns="row"))

    score(p_high, "p'", 0)
    score(p_low, "p''", 0)
    k_a = align(comparison.algorithm, p_low, setup, [comparison.beta], config, comparison.targets, stage="K-A",
                progress=progress)[comparison.align_iterations]
    score(k_a, "K-A", comparison.align_iterations)
    aligned = align(comparison.algorithm, p_high, setup, [comparison.beta], config, comparison.targets, stage="A-K",
                    progress=progress)[comparison.align_iterations]
    score(aligned, "A (p'_AK)", comparison.align_iterations)
    score(distil_rows(aligned, setup, stage=stage_targets, progress=progress), "A-K", comparison.align_iterations)
    for pad_config in comparison.pad:
        # One stage name for every variant: their fresh initialisations and sampling uniforms are shared
        # (common random numbers), so variant-to-variant differences are not sampling noise.
        run = align_then_pad(aligned, setup, pad_config, p_low, comparison.pad_checkpoints,
                             stage=stage_targets, progress=progress)
        for iteration, student in sorted(run.snapshots.items()):
            score(student, pad_label(pad_config), iteration)
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(0, "beta", comparison.beta)
    frame.insert(0, "algorithm", comparison.algorithm)
    return frame


def cached_comparison(store, setup: Setup, comparison: Comparison, progress: bool = True) -> pd.DataFrame:
    """`run_comparison` through the result store, with p' and p'' shared with the MoG chapters' cache
    (a `seconds` column holds its wall time when it was computed)."""
    return cached_from_references(store, setup, "pad_mog_comparison", "comparison", comparison,
                                  lambda p_high, p_low: run_comparison(comparison, setup, p_high, p_low, progress),
                                  progress)


METRIC_COLUMNS = ("reward", "target_precision", "overall_recall", "overall_precision")


def final_models(frame: pd.DataFrame) -> pd.DataFrame:
    """Each pipeline's final model only (PAD at its last iteration), in a fixed display order."""
    last_pad = frame[frame.pipeline.str.startswith("A→PAD")].groupby("pipeline").iterations.transform("max")
    keep = ~frame.pipeline.str.startswith("A→PAD")
    keep |= frame.pipeline.str.startswith("A→PAD") & (frame.iterations == last_pad.reindex(frame.index))
    order = ["p'", "p''", "K-A", "A (p'_AK)", "A-K"] + sorted(p for p in frame.pipeline.unique() if p.startswith("A→PAD"))
    out = frame[keep].copy()
    out["pipeline"] = pd.Categorical(out.pipeline, categories=[o for o in order if o in set(out.pipeline)], ordered=True)
    return out.sort_values(["pipeline", "trial"])


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over trials of the four metrics for every final model."""
    return final_models(frame).groupby("pipeline", observed=True)[list(METRIC_COLUMNS)].agg(["mean", "std"])


def comparison_boxplots(frame: pd.DataFrame, title: str = ""):
    """Seaborn boxplots of the four metrics, one box per final model (trials as points)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..mog.metrics import METRIC_LABELS

    data = final_models(frame)
    fig, axes = plt.subplots(1, len(METRIC_COLUMNS), figsize=(4.4 * len(METRIC_COLUMNS), 4.2))
    for ax, metric in zip(axes, METRIC_COLUMNS):
        sns.boxplot(data=data, x="pipeline", y=metric, hue="pipeline", ax=ax, fliersize=2, linewidth=0.8,
                    palette="tab10", legend=False)
        ax.set_title(METRIC_LABELS[metric], fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=60, labelsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def trajectory_plot(frame: pd.DataFrame, x: str = "overall_recall", y: str = "target_precision"):
    """Every PAD variant's trial-mean path in (recall, target precision) over PAD iterations, with
    K-A, A-K and the teacher p'_AK as reference points (the analogue of the paper's Figure 5)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..mog.metrics import METRIC_LABELS

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    pad = frame[frame.pipeline.str.startswith("A→PAD")]
    path = pad.groupby(["pipeline", "iterations"], as_index=False)[[x, y]].mean()
    sns.lineplot(data=path, x=x, y=y, hue="pipeline", marker="o", sort=False, ax=ax)
    for _, row in path.groupby("pipeline").tail(1).iterrows():
        ax.annotate(f"{int(row.iterations)}", (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    others = frame[frame.pipeline.isin(["p'", "p''", "K-A", "A-K", "A (p'_AK)"])]
    points = others.groupby("pipeline", as_index=False)[[x, y]].mean()
    sns.scatterplot(data=points, x=x, y=y, style="pipeline", color="k", s=70, ax=ax)
    ax.set_xlabel(METRIC_LABELS[x])
    ax.set_ylabel(METRIC_LABELS[y])
    ax.legend(fontsize=7)
    ax.set_title("PAD students over training (trial means; last PAD iteration annotated)", fontsize=9)
    fig.tight_layout()
    return fig


def escape_verdict(frame: pd.DataFrame) -> str:
    """The chapter's answer in numbers: did each PAD student reach the target, and what did it cost in recall?"""
    table = final_models(frame).groupby("pipeline", observed=True)[list(METRIC_COLUMNS)].mean()
    spread = final_models(frame).groupby("pipeline", observed=True)["reward"].std()
    lines = []
    ka, ak, teacher = table.loc["K-A"], table.loc["A-K"], table.loc["A (p'_AK)"]
    lines.append(f"K-A reaches a mean reward of {ka.reward:.2f} (target precision {ka.target_precision:.1f}, recall "
                 f"{ka.overall_recall:.2f}); A-K {ak.reward:.2f} ({ak.target_precision:.1f}, {ak.overall_recall:.2f}); "
                 f"the shared teacher p'_AK {teacher.reward:.2f}.")
    for name in (p for p in table.index if p.startswith("A→PAD")):
        row = table.loc[name]
        start = "p''" if "p_low" in name else "a fresh compact model"
        escaped = row.reward > ka.reward
        lines.append(
            f"{name}, starting from {start}: mean reward {row.reward:.2f} ± {spread[name]:.2f} "
            f"({'above' if escaped else 'not above'} K-A's {ka.reward:.2f}; {row.reward - ak.reward:+.2f} against A-K), "
            f"target precision {row.target_precision:.1f} ({row.target_precision - ka.target_precision:+.1f} against K-A), "
            f"recall {row.overall_recall:.2f} ({row.overall_recall - ka.overall_recall:+.2f} against K-A, "
            f"{row.overall_recall - ak.overall_recall:+.2f} against A-K).")
    return "\n".join(lines)


__all__ = ["PADConfig", "PADRun", "Comparison", "tempered", "fresh_student", "pad_step_loss", "train",
           "align_then_pad", "pad_label", "run_comparison", "cached_comparison", "final_models", "summary_table",
           "comparison_boxplots", "trajectory_plot", "escape_verdict"]
