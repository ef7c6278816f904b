"""The A-K − K-A gap as a function of how much of the target K-A's reference still covers (chapter 05).

The paper's mechanism (§3.4) needs a K-A reference that has lost the target. With App. A.1's β_KD = 1.25 no
trial's p'' loses it (chapter 02), so the algorithm chapters compare two references that both cover it.
Here coverage is the dose: p'' is distilled at each β_KD of a grid fixed before any result was seen, and for
every algorithm, trial and β_KD the study records

- K-A: p'' aligned against itself (β, the panel-(a) budget);
- A-K: p' aligned against itself into p'_AK (shared by every β_KD: it does not depend on β_KD), then
  distilled with the same β_KD as K-A's p'';
- controls: A-K whose final KD uses β_KD = 1 (no sharpening: what alignment alone gives a compact model) and
  p'_AK itself (no compression);

scored with the four metrics, beside the reference's coverage (`coverage.target_coverage`). Trials pair by
seed: trial t of every pipeline and β_KD starts from the same p' and uses the same streams, so the gap is
paired by trial (`alignkd.stats`), overall and within the trials whose p'' lost / kept the target.

Batched like every sweep: K-A trains all β_KD × trials rows of one algorithm at once, A-K's final KD all
(β_KD + control) × trials rows at once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..cache import ResultStore
from ..stats import compare_paired
from .algorithms import ALGORITHMS, find_algorithm
from .alignment import check_betas
from .coverage import LOST_SHARE, target_coverage
from .experiments import cached_high_recall, cached_low_recall
from .groundtruth import SINGLE_TARGET, check_targets
from .kd import KDConfig
from .metrics import labelled_evaluation
from .mixture import Mixture
from .pipelines import Setup, align, align_rows
from .sft import fit
from ..validation import require_int

AK_CONTROL = "A-K (β_KD 1 in final KD)"
ALIGNED = "A (p'_AK)"
PIPELINES = ("K-A", "A-K", AK_CONTROL, ALIGNED)
STRATA = ("all", "lost", "kept")


@dataclass(frozen=True)
class CoverageStudy:
    """The grid of chapter 05 (fixed before looking at any result; see the chapter)."""

    beta_kds: tuple[float, ...] = (1.25, 2.0, 5.0, 10.0, 20.0)
    """KD sharpening of K-A's reference p'' and of A-K's final KD (App. A.1: 1.25; Figure 1: 10)."""
    n_low_recalls: tuple[int, ...] = (4,)
    """Components of p'' and of A-K's final model (App. A.1: 4 or 3)."""
    algorithms: tuple[str, ...] = tuple(ALGORITHMS)
    """Alignment algorithms (names of `algorithms.ALGORITHMS`: GRPO with both KL forms is grpo and grpo_reward)."""
    beta: float = 1.0
    """KL/DPO coefficient β (the paper's iteration sweeps use 1.0)."""
    n_iterations: int = 400
    """Alignment iterations: the panel-(a) budget of chapter 03."""
    targets: tuple[int, ...] = SINGLE_TARGET
    """Target mode(s)."""
    min_lost: int = 20
    """Trials whose p'' lost the target needed at every β_KD >= `lost_from_beta_kd` (0: no requirement)."""
    lost_from_beta_kd: float = 10.0
    """β_KD from which the lost-target group must hold `min_lost` trials."""
    control_beta_kd: float = 1.0
    """β_KD of A-K's control final KD (1: no sharpening)."""
    config: dict = field(default_factory=dict)
    """Extra algorithm hyperparameters per algorithm name (fields of its config dataclass)."""

    def __post_init__(self):
        if not self.beta_kds:
            raise ValueError("CoverageStudy.beta_kds: need at least one β_KD (allowed: numbers > 0)")
        for b in list(self.beta_kds) + [self.control_beta_kd, self.lost_from_beta_kd]:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b < math.inf:
                raise ValueError(f"CoverageStudy.beta_kds = {self.beta_kds!r} (control {self.control_beta_kd!r}, "
                                 f"lost_from_beta_kd {self.lost_from_beta_kd!r}): every β_KD must be a finite number > 0")
        if len(set(self.beta_kds)) != len(self.beta_kds) or self.control_beta_kd in self.beta_kds:
            raise ValueError(f"CoverageStudy.beta_kds = {self.beta_kds!r}: values must be distinct and differ from "
                             f"control_beta_kd = {self.control_beta_kd!r}")
        for k in self.n_low_recalls:
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k:
                raise ValueError(f"CoverageStudy.n_low_recalls = {self.n_low_recalls!r}: each must be an integer >= 1")
        if not self.n_low_recalls or not self.algorithms:
            raise ValueError("CoverageStudy: need at least one n_low_recall and one algorithm")
        for a in self.algorithms:
            find_algorithm(a)
        check_betas([self.beta])
        check_targets(self.targets)
        require_int(self, "n_iterations")
        require_int(self, "min_lost", minimum=0)
        for a in self.algorithms:
            self.align_config(a)  # validates the extra fields before any compute

    def align_config(self, algorithm: str):
        return ALGORITHMS[algorithm].config(n_iterations=self.n_iterations, **self.config.get(algorithm, {}))

    def check_setup(self, setup: Setup) -> None:
        """Static checks against the setup, before any compute."""
        setup.check_alignable()
        if setup.n_trials < self.min_lost:
            raise ValueError(f"Setup.n_trials = {setup.n_trials}: CoverageStudy.min_lost = {self.min_lost} lost-target "
                             f"trials are needed at every β_KD >= {self.lost_from_beta_kd:g}, so n_trials must be at "
                             f">= {self.min_lost} (in practice ~150: about 14 % of p''_4 lose the target at β_KD 10)")
        for k in self.n_low_recalls:
            dataclasses.replace(setup, n_low_recall=k)  # validates k against n_high_recall


def check_lost_groups(coverage: pd.DataFrame, study: CoverageStudy, n_trials: int) -> None:
    """Fail before alignment if a β_KD >= lost_from_beta_kd has fewer than min_lost lost-target trials.

    `coverage` has one line per (n_low_recall, beta_kd, trial) with a `lost` column. The error says how many
    trials the observed loss rate needs.
    """
    if study.min_lost == 0:
        return
    checked = coverage[coverage.beta_kd >= study.lost_from_beta_kd]
    for (k, b), part in checked.groupby(["n_low_recall", "beta_kd"]):
        lost = int(part.lost.sum())
        if lost < study.min_lost:
            need = (f"about {math.ceil(study.min_lost * n_trials / lost)} trials at this loss rate "
                    f"({lost}/{n_trials})" if lost else f"more than {n_trials} trials (none lost the target)")
            raise ValueError(f"Setup.n_trials = {n_trials}: at β_KD = {b:g} with n_low_recall = {k}, only {lost} "
                             f"trials' p'' lost the target (share < {LOST_SHARE:.0%}); CoverageStudy.min_lost = "
                             f"{study.min_lost} are needed, i.e. {need}. Raise n_trials (or lower min_lost).")


def cached_reference_coverage(store: ResultStore, setup: Setup, study: CoverageStudy, progress: bool = False
                       ) -> tuple[dict[tuple[int, float], Mixture], pd.DataFrame]:
    """Every p'' of the grid (cached with the other chapters' models) and its per-trial coverage and metrics."""
    models, frames = {}, []
    for k in study.n_low_recalls:
        sub = dataclasses.replace(setup, n_low_recall=k)
        for b in study.beta_kds:
            model = cached_low_recall(store, sub, k, b, progress)
            models[k, b] = model
            cov = target_coverage(model, study.targets, setup.seed, setup.trials, setup.eval_samples)
            frames.append(cov.drop(columns="row").assign(n_low_recall=k, beta_kd=b))
    return models, pd.concat(frames, ignore_index=True)


def run_algorithm(algorithm: str, study: CoverageStudy, setup: Setup, p_high: Mixture,
                  p_lows: dict[tuple[int, float], Mixture], progress: bool = False) -> pd.DataFrame:
    """K-A, A-K, the β_KD = 1 control and p'_AK for one algorithm over the whole grid; one line per model row."""
    n = setup.n_trials
    config = study.align_config(algorithm)
    targets = tuple(study.targets)
    stage_targets = f"{algorithm}/{targets}"
    frames = []

    def score(models: Mixture, pipeline: str, labels: list[tuple[int, float]]) -> None:
        frames.append(labelled_evaluation(models, targets, setup.seed, setup.trials, setup.eval_samples, {
            "pipeline": pipeline, "n_low_recall": [k for (k, _) in labels for _ in range(n)],
            "beta_kd": [b for (_, b) in labels for _ in range(n)]}))

    # K-A: every p'' of the grid in one batch (the same stage as chapter 03's K-A: same streams per trial)
    labels = list(p_lows)
    start = Mixture.cat([p_lows[key] for key in labels])
    row_betas = torch.full((start.n_rows,), float(study.beta))
    k_a = align_rows(algorithm, start, setup, row_betas, config, targets, stage="K-A", progress=progress)
    score(k_a[study.n_iterations], "K-A", labels)
    # A-K: p'_AK does not depend on β_KD; one final KD per (n_low_recall, β_KD) and the β_KD = 1 control
    aligned = align(algorithm, p_high, setup, [study.beta], config, targets, stage="A-K",
                    progress=progress)[study.n_iterations]
    score(aligned, ALIGNED, [(0, 0.0)])
    for k in study.n_low_recalls:
        kd_labels = [(k, b) for b in study.beta_kds] + [(k, study.control_beta_kd)]
        # pre-sharpened teachers, one per β_KD, fit in one batch (KD with β_KD 1 on an already sharpened teacher)
        teacher = Mixture.cat([aligned.sharpened(b) for (_, b) in kd_labels])
        kd = KDConfig(n_components=k, beta_kd=1.0, n_iterations=setup.kd_iterations)
        students = fit(lambda m, gens: teacher.sample(m, gens), kd.sft(), setup.seed, f"ak_kd/{stage_targets}/{k}",
                       setup.trials, n_settings=len(kd_labels), progress=progress)
        n_grid = len(study.beta_kds)
        score(students.rows(slice(0, n_grid * n)), "A-K", kd_labels[:n_grid])
        score(students.rows(slice(n_grid * n, None)), AK_CONTROL, [(k, 0.0)])  # like p'_AK: no β_KD of the grid
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(0, "algorithm", algorithm)
    return frame


def study_key(setup: Setup, study: CoverageStudy, algorithm: str) -> dict:
    """The cache key of one algorithm's table of the study (`cached_study` saves under it; chapter 07 reads by it)."""
    return {"setup": dataclasses.asdict(setup), "study": {**dataclasses.asdict(study), "algorithms": [algorithm]}}


def cached_study(store: ResultStore, setup: Setup, study: CoverageStudy, progress: bool = True
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, reference coverage) of the whole study, one cached table per algorithm.

    Checks run before compute: the study and setup statically, then the lost-target groups once the
    (cheap, shared) references exist and before any alignment. `results` has one line per (algorithm,
    pipeline, n_low_recall, β_KD, trial); p'_AK lines carry n_low_recall 0 and β_KD 0 (they have neither),
    control lines β_KD 0 (their final KD uses `control_beta_kd`).
    """
    study.check_setup(setup)
    p_high = cached_high_recall(store, setup, progress)
    p_lows, coverage = cached_reference_coverage(store, setup, study, progress)
    check_lost_groups(coverage, study, setup.n_trials)
    frames = []
    for algorithm in study.algorithms:
        key = study_key(setup, study, algorithm)

        def compute(algorithm=algorithm) -> pd.DataFrame:
            start = time.perf_counter()
            frame = run_algorithm(algorithm, study, setup, p_high, p_lows, progress)
            frame["seconds"] = time.perf_counter() - start
            return frame

        frames.append(store.frame("mog_coverage_study", key, compute))
    return pd.concat(frames, ignore_index=True), coverage


def with_coverage(results: pd.DataFrame, coverage: pd.DataFrame) -> pd.DataFrame:
    """Every pipeline's line for (n_low_recall, β_KD, trial) joined with its K-A reference's coverage.

    p'_AK and control lines (no β_KD of the grid) are repeated once per (n_low_recall, β_KD), so every
    stratum has them.
    """
    grid = coverage[["n_low_recall", "beta_kd"]].drop_duplicates()
    aligned = results[results.pipeline == ALIGNED].drop(columns=["n_low_recall", "beta_kd"]).merge(grid, how="cross")
    control = results[results.pipeline == AK_CONTROL].drop(columns="beta_kd").merge(grid, on="n_low_recall")
    rest = results[~results.pipeline.isin([ALIGNED, AK_CONTROL])]
    cov = coverage[["n_low_recall", "beta_kd", "trial", "target_share", "log_density_at_target", "lost"]]
    return pd.concat([rest, aligned, control], ignore_index=True).merge(cov, on=["n_low_recall", "beta_kd", "trial"])


def stratified_gaps(data: pd.DataFrame, metric: str = "reward", seed: int = 0) -> pd.DataFrame:
    """Paired A − K-A of `metric` for A ∈ {A-K, control, p'_AK}, per (algorithm, n_low_recall, β_KD, stratum).

    `data` is `with_coverage(...)`. Strata: all trials, those whose p'' lost the target, those that kept it.
    Columns as `stats.compare_paired` plus `stratum`, `versus` (the A pipeline) and `metric`.
    """
    keys = ["algorithm", "n_low_recall", "beta_kd"]
    frames = []
    for stratum in STRATA:
        part = data if stratum == "all" else data[data.lost == (stratum == "lost")]
        if part.empty:
            continue
        for versus in PIPELINES[1:]:
            gap = compare_paired(part, keys, metric, a=versus, b="K-A", seed=seed)
            frames.append(gap.assign(stratum=stratum, versus=versus, metric=metric))
    return pd.concat(frames, ignore_index=True)


def lost_counts(coverage: pd.DataFrame) -> pd.DataFrame:
    """Per (n_low_recall, β_KD): trials, trials whose p'' lost the target, median share of samples near it."""
    g = coverage.groupby(["n_low_recall", "beta_kd"])
    return pd.DataFrame({"trials": g.size(), "lost": g.lost.sum().astype(int),
                         "median share": g.target_share.median(),
                         "median log q(target)": g.log_density_at_target.median()}).reset_index()


def lost_setup(setup: Setup, coverage: pd.DataFrame, beta_kd: float, n_low_recall: int) -> Setup | None:
    """The setup of only the trials whose p'' (β_KD, n_low_recall) lost the target, with that p'' as K-A's
    reference (None if no trial lost it)."""
    part = coverage[(coverage.n_low_recall == n_low_recall) & (coverage.beta_kd == beta_kd) & coverage.lost]
    ids = tuple(int(t) for t in sorted(part.trial))
    if not ids:
        return None
    return dataclasses.replace(setup, n_trials=len(ids), trial_ids=ids, beta_kd=float(beta_kd),
                               n_low_recall=n_low_recall)


def trap_beta_kd(counts: pd.DataFrame, min_lost: int, n_low_recall: int | None = None) -> float | None:
    """The smallest β_KD whose lost-target group holds at least max(min_lost, 2) trials (None if none does)."""
    part = counts if n_low_recall is None else counts[counts.n_low_recall == n_low_recall]
    enough = part[part.lost >= max(min_lost, 2)]
    return float(enough.beta_kd.min()) if len(enough) else None


__all__ = ["CoverageStudy", "PIPELINES", "AK_CONTROL", "ALIGNED", "STRATA", "check_lost_groups",
           "cached_reference_coverage", "run_algorithm", "cached_study", "with_coverage", "stratified_gaps", "lost_counts",
           "trap_beta_kd", "lost_setup", "study_key"]
