"""The two pipelines of §3.5 on the MoG testbed, and the batched sweeps that feed every figure.

Building blocks (public, used by the PAD chapter too):

- `high_recall(setup)`        p' per trial: `setup.n_high_recall` components fit to p* by SFT;
- `low_recall(p', setup)`     p'' per trial: p' distilled with β_KD sharpening into `setup.n_low_recall`;
- `align(...)`                any of the four algorithms on rows = β settings × trials, with snapshots;
- `distil_rows(...)`          the last step of Pipeline A-K: distil aligned rows with the same KD settings.

Pipeline K-A aligns p'' (reference p''); Pipeline A-K aligns p' (reference p') and distils the
result. `run_sweep` does both for one algorithm over a β grid at the final iteration and, from the
same run, over iteration checkpoints at one β, and scores everything with the four metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..validation import require_int
from .algorithms import ALGORITHMS, find_algorithm
from .alignment import AlignConfig, check_betas
from .groundtruth import MODE_SPACING, N_MODES, SINGLE_TARGET, check_spacing, check_targets
from .kd import KDConfig, distil
from .metrics import N_EVAL_SAMPLES, labelled_evaluation
from .mixture import Mixture
from .sft import SFTConfig, fit_p_star


@dataclass(frozen=True)
class Setup:
    """The shared starting models of every MoG experiment (App. A.1)."""

    n_trials: int = 20
    """Independent trials (App. A.1: N_TRIALS = 20); trial t uses streams seeded from (seed, stage, t)."""
    seed: int = 0
    """Base seed of every random stream."""
    n_high_recall: int = 6
    """Components of p' (App. A.1: N_SFT_MODES = 6)."""
    n_low_recall: int = 4
    """Components of p'' and of Pipeline A-K's final model (App. A.1: N_FINAL_MODES, 4 or 3)."""
    beta_kd: float = 1.25
    """KD weight sharpening β_KD (App. A.1: 1.25 in the sweeps; Figure 1 uses 10)."""
    sft_iterations: int = 2000
    """SFT steps for p' (App. A.1: 2000)."""
    kd_iterations: int = 2000
    """KD steps for p'' and for A-K's final distillation (App. A.1: 2000)."""
    eval_samples: int = N_EVAL_SAMPLES
    """Monte-Carlo samples per expectation of every metric."""
    mode_spacing: float = MODE_SPACING
    """Distance between neighbouring modes of p* (App. A.1: 1.5, the grid {−1.5, 0, 1.5}²). p', p'' and
    the metrics follow it; the alignment algorithms reward the target at 1.5 only (`check_alignable`)."""

    trial_ids: tuple[int, ...] = ()
    """Which trials to run (empty: 0..n_trials − 1). Trial t's streams depend on t only, so a subset, e.g. the
    trials whose p'' lost the target in chapter 05, reproduces those trials of the full run exactly."""

    def __post_init__(self):
        check_spacing(self.mode_spacing, "Setup.mode_spacing")
        require_int(self, "n_trials", "n_high_recall", "n_low_recall", "eval_samples")
        ids = self.trial_ids
        if ids and (len(ids) != self.n_trials or len(set(ids)) != len(ids)
                    or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids)):
            raise ValueError(f"Setup.trial_ids = {ids!r}: must be n_trials = {self.n_trials} distinct integers >= 0 "
                             f"(or empty for 0..n_trials − 1)")
        require_int(self, "sft_iterations", "kd_iterations", minimum=0)
        if self.n_high_recall > N_MODES:
            raise ValueError(f"n_high_recall = {self.n_high_recall}: must be <= {N_MODES}, the modes of p*")
        if self.n_low_recall > self.n_high_recall:
            raise ValueError(f"n_low_recall = {self.n_low_recall}: must be <= n_high_recall = {self.n_high_recall}")
        if isinstance(self.beta_kd, bool) or not isinstance(self.beta_kd, (int, float)) or not self.beta_kd > 0:
            raise ValueError(f"Setup.beta_kd = {self.beta_kd!r}: must be a number > 0 (the paper uses 1.25 in "
                             f"the sweeps and 10 in Figure 1)")

    def check_alignable(self) -> None:
        """Alignment rewards the target at App. A.1's spacing; other geometries are for p', p'' and metrics."""
        if self.mode_spacing != MODE_SPACING:
            raise ValueError(f"Setup.mode_spacing = {self.mode_spacing!r}: the alignment algorithms reward the target "
                             f"at App. A.1's spacing only (allowed for alignment: {MODE_SPACING}); other spacings "
                             f"serve p', p'' and their metrics (chapter 02)")

    @property
    def trials(self) -> list[int]:
        return list(self.trial_ids) if self.trial_ids else list(range(self.n_trials))

    def sft_config(self) -> SFTConfig:
        return SFTConfig(n_components=self.n_high_recall, n_iterations=self.sft_iterations)

    def kd_config(self, n_components: int | None = None, beta_kd: float | None = None) -> KDConfig:
        return KDConfig(n_components=n_components or self.n_low_recall,
                        beta_kd=self.beta_kd if beta_kd is None else beta_kd, n_iterations=self.kd_iterations)


def high_recall(setup: Setup, progress: bool = False) -> Mixture:
    """p': one row per trial, `setup.n_high_recall` components fit to p* by SFT."""
    return fit_p_star(setup.sft_config(), setup.seed, setup.trials, stage="p_prime", progress=progress,
                      spacing=setup.mode_spacing)


def low_recall(teacher: Mixture, setup: Setup, n_components: int | None = None, beta_kd: float | None = None,
               progress: bool = False) -> Mixture:
    """p'': each trial's p' distilled with β_KD sharpening (defaults from `setup`)."""
    config = setup.kd_config(n_components, beta_kd)
    return distil(teacher, config, setup.seed, setup.trials,
                  stage=f"p_low/{config.n_components}/{config.beta_kd!r}", progress=progress)


def align(name: str, start: Mixture, setup: Setup, betas: Sequence[float], config: AlignConfig | None = None,
          targets: Sequence[int] = SINGLE_TARGET, checkpoints: Sequence[int] = (), stage: str = "",
          progress: bool = False) -> dict[int, Mixture]:
    """Align `start` ([trials] rows) once per β, all β in one batched run, against `start` itself.

    Returns {iteration: Mixture with rows = len(betas) × trials, β-major}.
    """
    betas = check_betas(betas)
    row_betas = torch.tensor(betas).repeat_interleave(setup.n_trials)
    return align_rows(name, start.repeat(len(betas)), setup, row_betas, config, targets, checkpoints, stage, progress)


def align_rows(name: str, start: Mixture, setup: Setup, row_betas: torch.Tensor, config: AlignConfig | None = None,
               targets: Sequence[int] = SINGLE_TARGET, checkpoints: Sequence[int] = (), stage: str = "",
               progress: bool = False) -> dict[int, Mixture]:
    """Align every row of `start` (rows = settings × trials, setting-major) against itself, row b with β row_betas[b].

    Row (setting, trial t) draws from trial t's streams of stage `name/stage`, so a row equals the same
    trial's row of any other batch with that stage (e.g. `align`'s).
    """
    entry = find_algorithm(name)
    setup.check_alignable()
    config = config or entry.config()
    entry.check_config(config)
    return entry.train(start, start, config, setup.seed, setup.trials, targets=targets, betas=row_betas,
                       checkpoints=checkpoints, stage=f"{name}/{stage}", progress=progress)


def distil_rows(aligned: Mixture, setup: Setup, stage: str, progress: bool = False) -> Mixture:
    """Pipeline A-K's last step: distil aligned rows (settings × trials) with the setup's KD settings."""
    return distil(aligned, setup.kd_config(), setup.seed, setup.trials, stage=f"ak_kd/{stage}", progress=progress)


@dataclass(frozen=True)
class Sweep:
    """One algorithm's β sweep at a fixed budget plus its iteration sweep at one β (Figs 3, 4, 6, 7, 10–12)."""

    algorithm: str = "ppo"
    """A name of `alignkd.mog.algorithms.ALGORITHMS` (the registry lists them)."""
    betas: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0)
    """β grid of panel (a)."""
    checkpoints: tuple[int, ...] = (100, 200, 400)
    """Iteration grid of panel (b); the largest is panel (a)'s budget."""
    iteration_beta: float = 1.0
    """β of panel (b) (paper: 1.0); added to the run if it is not in `betas`."""
    targets: tuple[int, ...] = SINGLE_TARGET
    """Target modes (single: (7,), multi: (7, 6))."""
    config: dict = field(default_factory=dict)
    """Extra algorithm hyperparameters (fields of the algorithm's config dataclass)."""

    def __post_init__(self):
        find_algorithm(self.algorithm)
        check_betas(list(self.betas) + [self.iteration_beta])
        check_targets(self.targets)
        if not self.checkpoints or min(self.checkpoints) < 1:
            raise ValueError(f"checkpoints = {self.checkpoints!r}: need iteration counts >= 1")
        self.align_config()  # validates the algorithm's fields before any compute

    @property
    def n_iterations(self) -> int:
        return max(self.checkpoints)

    def run_betas(self) -> list[float]:
        betas = list(self.betas)
        return betas if self.iteration_beta in betas else betas + [self.iteration_beta]

    def align_config(self) -> AlignConfig:
        return ALGORITHMS[self.algorithm].config(n_iterations=self.n_iterations, **self.config)


def run_sweep(sweep: Sweep, setup: Setup, p_high: Mixture, p_low: Mixture, progress: bool = False) -> pd.DataFrame:
    """Both pipelines for one algorithm; one line per (pipeline, panel, β, iterations, trial) with the metrics.

    Columns: algorithm, pipeline ("K-A", "A-K", "A (p'_AK)"), panel ("beta" or "iterations"), beta,
    iterations, trial and the four metrics. "A (p'_AK)" is A-K's aligned model before distillation.
    """
    setup.check_alignable()
    betas = sweep.run_betas()
    config = sweep.align_config()
    n = setup.n_trials
    i_beta = betas.index(sweep.iteration_beta)
    it_points = sorted(set(sweep.checkpoints))
    frames = []

    def score(models: Mixture, pipeline: str, panel: str, labels: list[tuple[float, int]]) -> None:
        frames.append(labelled_evaluation(models, sweep.targets, setup.seed, setup.trials, setup.eval_samples, {
            "algorithm": sweep.algorithm, "pipeline": pipeline, "panel": panel,
            "beta": [b for (b, _) in labels for _ in range(n)],
            "iterations": [it for (_, it) in labels for _ in range(n)]}))

    for pipeline, start in (("K-A", p_low), ("A-K", p_high)):
        snaps = align(sweep.algorithm, start, setup, betas, config, sweep.targets, it_points,
                      stage=pipeline, progress=progress)
        final = snaps[sweep.n_iterations]
        beta_rows = [i for i, b in enumerate(betas) if b in sweep.betas]
        beta_labels = [(betas[i], sweep.n_iterations) for i in beta_rows]
        panel_a = Mixture.cat([final.rows(slice(i * n, (i + 1) * n)) for i in beta_rows])
        panel_b = Mixture.cat([snaps[it].rows(slice(i_beta * n, (i_beta + 1) * n)) for it in it_points])
        it_labels = [(sweep.iteration_beta, it) for it in it_points]
        if pipeline == "A-K":
            score(panel_a, "A (p'_AK)", "beta", beta_labels)
            # Panel (b)'s last checkpoint is panel (a)'s model at iteration_beta: distil it once.
            shared = sweep.iteration_beta in sweep.betas
            early = panel_b.rows(slice(0, (len(it_points) - 1) * n)) if shared else panel_b
            distilled = distil_rows(Mixture.cat([panel_a, early]), setup,
                                    stage=f"{sweep.algorithm}/{sweep.targets}", progress=progress)
            panel_a = distilled.rows(slice(0, panel_a.n_rows))
            panel_b = distilled.rows(slice(panel_a.n_rows, None))
            if shared:
                j = beta_rows.index(i_beta)
                panel_b = Mixture.cat([panel_b, panel_a.rows(slice(j * n, (j + 1) * n))])
        score(panel_a, pipeline, "beta", beta_labels)
        score(panel_b, pipeline, "iterations", it_labels)
    return pd.concat(frames, ignore_index=True)


__all__ = ["ALGORITHMS", "Setup", "Sweep", "high_recall", "low_recall", "align", "align_rows", "distil_rows",
           "run_sweep"]
