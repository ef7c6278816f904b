"""Trapped or only delayed? K-A and A-K against the alignment budget, read from checkpoints of one run per seed.

    dose = cached_budget_dose(store, refs, alignments, seeds, budgets=[50, 100, 200, 400], final_tau=0.95, jobs=2)
    curves = budget_curves(dose, "target_share")   # per (algorithm, model, iteration): mean over seeds, 95 % interval
    readings = budget_readings(dose)               # per algorithm: the gap at the smallest and the largest budget,
                                                   # its change, and whether K-A is trapped or only delayed

Why: with a short budget a K-A policy whose reference writes the target in a fraction of a percent of its samples
sees a handful of target samples in its whole run, so a gap after `iterations` cannot tell a *trap* (more steps do
not rescue K-A: the paper's claim) from a *delay* (K-A gets there later). The theory says the answer depends on how
the reference anchors the update (`RunConfig.reference_anchor`): a reverse KL in the reward punishes every move
towards what the reference lacks; GRPO's k3 in the loss pulls like a forward KL.

One run per (algorithm, seed, pipeline) aligns for the largest budget; its policy is saved after each budget's
iteration (`BudgetRun`, `AlignedAt`). Evaluation does not draw from any training random stream, so the policy
saved after b iterations *is* the final policy of a b-iteration run (`tests/test_lm_budget.py` holds them equal).
No selection rule is applied: a budget means the policy after that many iterations, in both pipelines (the main
pipelines keep App. C.4's selected checkpoint instead).

Rows (`cached_budget_dose`): algorithm (label), seed, pipeline, model, iteration, final_tau, and every metric of
`References.evaluate`:
- K-A: `p''_KA`, the aligned p'' after each budget;
- A-K: `p'_AK`, the aligned p' after each budget, and `p''_AK`, its final KD (p'''s settings at `final_tau`)
  after the smallest and after the largest budget only: a final KD costs more than the alignment it follows, and
  the readings compare those two budgets.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..cache import ResultStore, crash_point
from ..stats import paired_bootstrap, paired_on_index
from .algorithms import algorithm_of
from .config import LLMConfig
from .experiments import (PIPELINES, Oracle, References, batched, cached_evaluated, cached_student,
                          cached_students_together, distilled, final_stage, load_model, cached_references_in_worker,
                          save_model, train_together)
from .metrics import COLUMNS_VERSION
from .parallel import in_turn, in_workers, resolve_jobs

MODELS = {"K-A": "p''_KA", "A-K": "p'_AK"}  # the aligned model of each pipeline, after a budget
FINAL = "p''_AK"  # A-K's final KD of p'_AK


@dataclass(frozen=True)
class BudgetRun:
    """A copy of `reference` aligned against itself for max(`budgets`) iterations, its policy kept after each."""

    reference: Any
    algorithm: str
    config: Any
    seed: int
    oracle: Oracle
    budgets: tuple[int, ...]


@dataclass(frozen=True)
class AlignedAt:
    """The policy of `run` after `iteration` alignment iterations."""

    run: BudgetRun
    iteration: int


def check_budgets(budgets: Sequence[int]) -> tuple[int, ...]:
    """`budgets` sorted, or an error naming them: distinct integers >= 1, at least two (a dose needs two)."""
    values = tuple(budgets)
    if len(values) < 2 or len(set(values)) != len(values) or any(
            not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in values):
        raise ValueError(f"budgets = {list(values)}: at least two distinct integers >= 1 (alignment iterations)")
    return tuple(sorted(values))


def budget_config(alignment, budgets: Sequence[int]):
    """`alignment` run for the largest budget, evaluated (a trajectory row and an `on_eval` call) at every budget:
    `eval_every` becomes the greatest common divisor of itself and the budgets."""
    budgets = check_budgets(budgets)
    return replace(alignment, n_iterations=budgets[-1], eval_every=math.gcd(alignment.eval_every, *budgets))


def _folder(iteration: int) -> str:
    return f"iteration_{iteration:06d}"


def cached_budget_run(store: ResultStore, refs: References, reference_name: str, alignment, seed: int,
                      budgets: Sequence[int], *, progress: bool = True
                      ) -> tuple[BudgetRun, dict[int, Any], pd.DataFrame]:
    """Align a copy of `refs.models[reference_name]` for the largest budget (cached); returns the recipe, the
    policy after each budget ({iteration: model}) and the run's trajectory."""
    budgets = check_budgets(budgets)
    entry = algorithm_of(alignment)
    config = budget_config(alignment, budgets)
    reference = refs.models[reference_name]
    recipe = BudgetRun(refs.recipes[reference_name], entry.name, config, seed, refs.oracle_recipe, budgets)

    def build(tmp: Path) -> None:
        def on_eval(step: int, model) -> None:
            if step in budgets:
                save_model(model, tmp / _folder(step))
                crash_point("budget:checkpoint")

        policy = reference.with_model(copy.deepcopy(reference.model))
        frozen = reference.with_model(copy.deepcopy(reference.model))
        run = entry.train(policy, frozen, refs.oracle, config, seed=seed, progress=progress, on_eval=on_eval)
        run.trajectory.to_parquet(tmp / "trajectory.parquet")

    folder = store.directory("lm_budget_run", recipe, build)
    models = {b: load_model(folder / _folder(b), refs.p_star) for b in budgets}
    return recipe, models, pd.read_parquet(folder / "trajectory.parquet")


def cached_budget_runs_together(store: ResultStore, refs: References, reference_name: str, alignment,
                                seeds: Sequence[int], budgets: Sequence[int]) -> None:
    """Build the `cached_budget_run` entries of `seeds` not yet in the store as one computation
    (`experiments.train_together`) when the algorithm trains seeds together; otherwise nothing."""
    budgets = check_budgets(budgets)
    config = budget_config(alignment, budgets)
    recipes = {seed: BudgetRun(refs.recipes[reference_name], algorithm_of(config).name, config, seed,
                               refs.oracle_recipe, budgets) for seed in seeds}
    missing = [seed for seed in seeds if not store.has("lm_budget_run", recipes[seed])]
    if not batched(config, missing):
        return
    with tempfile.TemporaryDirectory() as scratch:
        def on_eval(r: int, step: int, model) -> None:
            if step in budgets:
                save_model(model, Path(scratch) / str(r) / _folder(step))

        with store.charged("lm_budget_run"):
            runs = train_together([refs.models[reference_name]] * len(missing), refs.oracle, config, missing, on_eval)
        for r, (seed, (_, run)) in enumerate(zip(missing, runs)):
            def build(tmp: Path, r=r, run=run) -> None:
                for step in budgets:
                    shutil.copytree(Path(scratch) / str(r) / _folder(step), tmp / _folder(step))
                run.trajectory.to_parquet(tmp / "trajectory.parquet")

            store.directory("lm_budget_run", recipes[seed], build)


@dataclass(frozen=True)
class BudgetCell:
    """One seed of one alignment of the dose: both pipelines' runs, their evaluations after every budget, and
    A-K's final KD after the smallest and the largest."""

    config: LLMConfig
    alignment: Any
    seed: int
    budgets: tuple[int, ...]
    final_tau: float


def cached_budget_rows(store: ResultStore, refs: References, cell: BudgetCell, *,
                       progress: bool = True) -> list[dict[str, Any]]:
    """The rows of one cell (module docstring), every model built or read from the store."""
    rows, nan = [], float("nan")
    ends = (cell.budgets[0], cell.budgets[-1])
    for pipeline, reference_name in PIPELINES:
        recipe, models, _ = cached_budget_run(store, refs, reference_name, cell.alignment, cell.seed, cell.budgets,
                                              progress=progress)
        for iteration, model in models.items():
            at = AlignedAt(recipe, iteration)
            base = {"seed": cell.seed, "pipeline": pipeline, "iteration": iteration}
            rows.append({**base, "model": MODELS[pipeline], "final_tau": nan,
                         **cached_evaluated(store, refs, at, model)})
            if pipeline == "A-K" and iteration in ends:
                final_recipe = distilled(at, final_stage(refs.config, cell.final_tau, cell.seed))
                final = cached_student(store, final_recipe, model, refs.p_star, progress=progress)
                rows.append({**base, "model": FINAL, "final_tau": cell.final_tau,
                             **cached_evaluated(store, refs, final_recipe, final)})
    return rows


def _build_in_worker(profile: str, root: str, cell: BudgetCell) -> None:
    store = ResultStore(profile, root=root)
    cached_budget_rows(store, cached_references_in_worker(store, cell.config), cell, progress=False)


def _runs_together_in_worker(profile: str, root: str, config: LLMConfig, reference_name: str, alignment,
                             seeds: tuple[int, ...], budgets: tuple[int, ...]) -> None:
    store = ResultStore(profile, root=root)
    cached_budget_runs_together(store, cached_references_in_worker(store, config), reference_name, alignment, seeds, budgets)


def _finals_together_in_worker(profile: str, root: str, config: LLMConfig, alignment, seeds: tuple[int, ...],
                               budgets: tuple[int, ...], budget: int, final_tau: float) -> None:
    """A-K's final KDs after `budget` of every seed, as one computation (`experiments.cached_students_together`)."""
    store = ResultStore(profile, root=root)
    refs = cached_references_in_worker(store, config)
    recipes, teachers = [], []
    for seed in seeds:
        run, models, _ = cached_budget_run(store, refs, "p'", alignment, seed, budgets, progress=False)
        recipes.append(distilled(AlignedAt(run, budget), final_stage(refs.config, final_tau, seed)))
        teachers.append(models[budget])
    cached_students_together(store, recipes, teachers, refs.p_star)


def cached_budget_dose(store: ResultStore, refs: References, alignments: Mapping[str, Any], seeds: Sequence[int], *,
                       budgets: Sequence[int], final_tau: float, progress: bool = True,
                       jobs: int | None = 1) -> pd.DataFrame:
    """The dose (cached; rows in the module docstring), one label of `alignments` per algorithm. `jobs` > 1
    (None: one per core, 1 on a GPU) builds the cells in that many processes first; no number depends on it."""
    budgets = check_budgets(budgets)
    cells = {label: [BudgetCell(refs.config, alignment, seed, budgets, final_tau) for seed in seeds]
             for label, alignment in alignments.items()}
    key = {"references": refs.recipes, "oracle": refs.oracle_recipe, "alignments": dict(alignments),
           "seeds": list(seeds), "budgets": list(budgets), "final_tau": final_tau, "metrics": refs.config.metrics,
           "n_recall": refs.config.n_recall_samples, "columns": COLUMNS_VERSION}

    def compute() -> pd.DataFrame:
        every = [cell for group in cells.values() for cell in group]
        workers = resolve_jobs(jobs, [refs.config.device])
        where = (store.profile, str(store.root), refs.config)
        in_turn(_runs_together_in_worker, [(*where, name, alignment, tuple(seeds), budgets)
                                            for alignment in alignments.values() if batched(alignment, seeds)
                                            for _, name in PIPELINES], workers)
        if len(seeds) > 1:
            in_turn(_finals_together_in_worker, [(*where, alignment, tuple(seeds), budgets, budget, final_tau)
                                                  for alignment in alignments.values()
                                                  for budget in (budgets[0], budgets[-1])], workers)
        if workers > 1 and len(every) > 1:
            in_workers(_build_in_worker, [(store.profile, str(store.root), cell) for cell in every], jobs=workers)
        frames = []
        for label, group in cells.items():
            rows = [row for cell in group for row in cached_budget_rows(store, refs, cell, progress=progress)]
            frames.append(pd.DataFrame(rows).assign(algorithm=label))
        frame = pd.concat(frames, ignore_index=True)
        first = ["algorithm", "seed", "pipeline", "model", "iteration", "final_tau"]
        return frame[first + [c for c in frame.columns if c not in first]]

    return store.frame("lm_budget_dose", key, compute)


# --------------------------------------------------------------------------- reading the dose (no models needed)


def budget_curves(dose: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per (algorithm, pipeline, model, iteration): the mean of `column` over seeds with its 95 % bootstrap
    interval over seeds (`mean`, `low`, `high`, `n_seeds`)."""
    rows = []
    keys = ["algorithm", "pipeline", "model", "iteration"]
    for values, part in dose.groupby(keys, sort=False):
        x = part[column].dropna().to_numpy()
        mean, low, high = paired_bootstrap(x, [0.0] * len(x))
        rows.append({**dict(zip(keys, values)), "mean": mean, "low": low, "high": high, "n_seeds": len(x)})
    return pd.DataFrame(rows, columns=[*keys, "mean", "low", "high", "n_seeds"])


READINGS = ("trapped", "closing", "opens", "delayed", "no gap", "not testable")
"""How K-A fares as the budget grows (`budget_readings`), from A-K's lead (A-K − K-A, interval above 0) after the
smallest and after the largest budget:
- trapped: a lead at both ends that has not clearly shrunk;
- closing: a lead at both ends that has clearly shrunk (K-A may get there beyond the largest budget);
- opens: no lead at the smallest budget, a lead at the largest (the trap shows only with more steps);
- delayed: a lead at the smallest budget, none at the largest: more steps rescued K-A;
- no gap: a lead at neither end;
- not testable: fewer than two seeds (no interval)."""


def _per_seed(dose: pd.DataFrame, algorithm: str, model: str, iteration: int, column: str) -> pd.Series:
    part = dose[(dose["algorithm"] == algorithm) & (dose["model"] == model) & (dose["iteration"] == iteration)]
    return part.set_index("seed")[column].sort_index()


def budget_readings(dose: pd.DataFrame, column: str = "target_share") -> pd.DataFrame:
    """Per algorithm, paired by seed: A-K's final model minus K-A's in `column` after the smallest budget
    (`gap_first`, `_low`, `_high`) and after the largest (`gap_last`, ...), the change of the gap between them
    (`change`, ...), K-A's own change (`ka_change`, ...), and the `reading` (one of `READINGS`)."""
    rows = []
    for algorithm in dose["algorithm"].unique():
        iterations = sorted(dose.loc[dose["algorithm"] == algorithm, "iteration"].unique())
        first, last = int(iterations[0]), int(iterations[-1])
        gap = {b: _per_seed(dose, algorithm, FINAL, b, column) - _per_seed(dose, algorithm, MODELS["K-A"], b, column)
               for b in (first, last)}
        row = {"algorithm": algorithm, "metric": column, "first": first, "last": last}
        for name, (a, b) in {"gap_first": (gap[first], 0 * gap[first]), "gap_last": (gap[last], 0 * gap[last]),
                             "change": (gap[last], gap[first]),
                             "ka_change": (_per_seed(dose, algorithm, MODELS["K-A"], last, column),
                                           _per_seed(dose, algorithm, MODELS["K-A"], first, column))}.items():
            (estimate, low, high), n = paired_on_index(a, b)
            row |= {name: estimate, f"{name}_low": low, f"{name}_high": high}
        row["n_seeds"] = n
        row["reading"] = reading(row)
        rows.append(row)
    return pd.DataFrame(rows)


def reading(row: Mapping[str, float]) -> str:
    """One of `READINGS` from a `budget_readings` row's intervals."""
    if math.isnan(row["gap_first_low"]) or math.isnan(row["gap_last_low"]):
        return "not testable"
    first, last = row["gap_first_low"] > 0, row["gap_last_low"] > 0
    if first and last:
        return "closing" if row["change_high"] < 0 else "trapped"
    return "opens" if last else "delayed" if first else "no gap"


def settled(readings: pd.DataFrame, iterations: int) -> bool:
    """Whether a budget of `iterations` reads what the largest budget reads: no algorithm's gap changes clearly
    beyond it (every reading is trapped or no gap) and `iterations` is at least the smallest budget."""
    return bool((readings["first"] <= iterations).all() and readings["reading"].isin(("trapped", "no gap")).all())
