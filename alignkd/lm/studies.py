"""Studies on chapter 06's references (issue 11): reward gaps at matched length, recall against capacity,
the gap against coverage.

    gaps = cached_length_gaps(store, refs, alignments, seeds, final_tau=0.95)  # A-K − K-A, raw and at matched length
    grid = cached_capacity_grid(store, refs, alignment, seeds)                 # the 2 × 2 of K-A references
    parts = gap_decomposition(grid, metrics, label)                            # how much is lost target, how much size
    sweep = cached_coverage_sweep(store, config, alignments, seeds, tau_topics=[1.0, 0.85, 0.7, 0.5])
    table = sweep_intervals(sweep)                # per τ_topic and algorithm: p'' share, gaps with 95 % intervals

The 2 × 2 separates what the paper attributes to recall from what a bigger model buys anyway: K-A
references of p''s size and of p'''s size, each distilled from p' with p'''s KD settings, with and
without the topic pruning (τ_topic), each aligned against itself with the same settings. Every model
is cached under its recipe (`experiments`), so the grid's p''-sized pruned cell *is* p'' and its aligned
runs are K-A's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..cache import ResultStore
from ..stats import paired_bootstrap
from .config import StageConfig
from .experiments import (PipelineCell, References, cached_a_k_final, cached_align, cached_cells, cached_evaluated,
                          cached_references, cached_run_pipelines, cached_student, distilled)
from .length import length_matched_gap, reward_samples
from .metrics import COLUMNS_VERSION
from .parallel import interleaved
from .premise import PremiseRule, cached_premise_check

LENGTH_SEED = 777


def cached_length_gaps(store: ResultStore, refs: References, alignments: Mapping[str, Any], seeds: Sequence[int], *,
                final_tau: float, n_samples: int = 2000, min_count: int = 20) -> pd.DataFrame:
    """Per algorithm label and seed: final reward of A-K (p''_AK at `final_tau`) minus K-A (p''_KA), raw and at
    matched response length (`length.length_matched_gap`), with both mean lengths. Reads the cached models
    of `experiments.cached_run_pipelines` (it builds any that are missing). The table is stored, keyed by the
    models' recipes and the sampling settings."""
    key = {"references": refs.recipes, "oracle": refs.oracle_recipe, "alignments": dict(alignments),
           "seeds": list(seeds), "final_tau": final_tau, "n_samples": n_samples, "min_count": min_count,
           "sample_seed": LENGTH_SEED}

    def compute() -> pd.DataFrame:
        rows = []
        for label, alignment in alignments.items():
            for seed in seeds:
                ka = cached_align(store, refs, "p''", alignment, seed, progress=False)
                ak = cached_align(store, refs, "p'", alignment, seed, progress=False)
                _, final = cached_a_k_final(store, refs, ak, final_tau, seed, progress=False)
                cap = refs.config.metrics.max_new_tokens
                a = reward_samples(final, refs.oracle, n_samples, cap, seed=LENGTH_SEED + seed)
                b = reward_samples(ka.model, refs.oracle, n_samples, cap, seed=LENGTH_SEED + seed)
                gap = length_matched_gap(a, b, min_count=min_count)
                rows.append({"algorithm": label, "seed": seed, **dataclasses.asdict(gap)})
        return pd.DataFrame(rows)

    return store.frame("lm_length_gaps", key, compute)


def grid_stage(refs: References, size: str, tau_topic: float) -> StageConfig:
    """p'''s KD stage with another student size and topic sharpening."""
    low = refs.config.low_recall
    return StageConfig(dataclasses.replace(low.data, tau_topic=tau_topic), dataclasses.replace(low.train, size=size))


def cached_capacity_grid(store: ResultStore, refs: References, alignment, seeds: Sequence[int], *, label: str,
                  sizes: Sequence[str] | None = None, tau_topics: Sequence[float] | None = None,
                  progress: bool = True, jobs: int | None = 1) -> pd.DataFrame:
    """K-A on a grid of references: rows size, tau_topic, pruned, seed (−1 for the reference before alignment),
    stage (`reference` / `aligned`) and every metric of `refs.evaluate`. Default grid: the sizes of p' and p''
    × the chapter's τ_topic and 1 (no pruning). `jobs` > 1 (None: one per core) first builds the grid's
    references and runs in that many processes (`experiments.cached_cells`)."""
    config = refs.config
    sizes = list(dict.fromkeys(sizes or (config.high_recall.train.size, config.low_recall.train.size)))
    tau_topics = list(dict.fromkeys(tau_topics or (config.low_recall.data.tau_topic, 1.0)))
    key = {"references": refs.recipes, "oracle": refs.oracle_recipe, "alignment": alignment, "seeds": list(seeds),
           "sizes": sizes, "tau_topics": tau_topics, "metrics": config.metrics, "n_recall": config.n_recall_samples,
           "columns": COLUMNS_VERSION}

    def compute() -> pd.DataFrame:
        # a grid cell is the K-A run of a config whose p'' is that cell's reference
        cached_cells(store, interleaved([
            [PipelineCell(dataclasses.replace(config, low_recall=grid_stage(refs, size, tau_topic)), alignment,
                          seed, (), ka_only=True) for seed in seeds]
            for size in sizes for tau_topic in tau_topics]), jobs=jobs)
        rows = []
        for size in sizes:
            for tau_topic in tau_topics:
                recipe = distilled(refs.recipes["p'"], grid_stage(refs, size, tau_topic))
                model = cached_student(store, recipe, refs.models["p'"], refs.p_star, progress=progress)
                name = f"ref {size} τ_topic {tau_topic:g}"
                cell = dataclasses.replace(refs, models={**refs.models, name: model},
                                           recipes={**refs.recipes, name: recipe})
                base = {"size": size, "tau_topic": tau_topic, "pruned": tau_topic < 1}
                rows.append({**base, "seed": -1, "stage": "reference", **cached_evaluated(store, refs, recipe, model)})
                for seed in seeds:
                    run = cached_align(store, cell, name, alignment, seed, progress=progress)
                    rows.append({**base, "seed": seed, "stage": "aligned",
                                 **cached_evaluated(store, refs, run.recipe, run.model)})
        frame = pd.DataFrame(rows)
        frame.insert(0, "algorithm", label)
        return frame

    return store.frame("lm_capacity_grid", key, compute)


def gap_decomposition(grid: pd.DataFrame, metrics: pd.DataFrame, *, high_size: str, low_size: str, tau_topic: float,
                      final_tau: float, column: str = "reward") -> dict[str, float]:
    """A-K − K-A split along the grid (means over seeds of `column` after alignment):

    - `pruning`: unpruned minus pruned K-A reference at p'''s size (what losing the target costs);
    - `size`: p'-sized minus p''-sized unpruned K-A reference (what capacity buys with the target kept);
    - `gap`: A-K (p''_AK at `final_tau`) minus K-A (p''_KA); `rest` = gap − pruning − size.
    """
    aligned = grid[grid["stage"] == "aligned"].groupby(["size", "tau_topic"])[column].mean()
    label = grid["algorithm"].iloc[0]
    mine = metrics[metrics["algorithm"] == label]
    ka = mine.loc[mine["model"] == "p''_KA", column].mean()
    ak = mine.loc[(mine["model"] == "p''_AK") & (mine["final_tau"] == final_tau), column].mean()
    pruning = aligned[(low_size, 1.0)] - aligned[(low_size, tau_topic)]
    size = aligned[(high_size, 1.0)] - aligned[(low_size, 1.0)] if high_size != low_size else 0.0
    gap = ak - ka
    return {"gap": float(gap), "pruning": float(pruning), "size": float(size), "rest": float(gap - pruning - size)}


def cached_coverage_sweep(store: ResultStore, config, alignments: Mapping[str, Any], seeds: Sequence[int], *,
                   tau_topics: Sequence[float], rule=None, progress: bool = True, jobs: int | None = 1) -> pd.DataFrame:
    """The gap against coverage (issue 11.3): for each τ_topic, p'' (and A-K's final KD) distilled with that
    sharpening, its target share measured on its own samples (`premise.cached_premise_check`), and K-A / A-K
    run for every alignment and seed (A-K's final KD at the config's first τ).

    One row per (tau_topic, algorithm, seed): the K-A reference's measured target share
    `reference_target_share` with its 95 % Wilson interval (`reference_target_share_low`, `_high`), its ratio
    to p*'s and the premise verdict;
    the final reward, target share and mean response length of K-A (`ka_*`) and A-K (`ak_*`), and the gaps
    A-K − K-A `gap_reward`, `gap_target_share`.

    Everything is cached by recipe, so the sweep shares with the rest of the chapter whatever it can: the
    A-K alignments (p' does not depend on τ_topic), the main run at the chapter's τ_topic, and at τ_topic 1
    the unpruned p''-sized reference of the 2 × 2 (`cached_capacity_grid`) with its K-A runs.

    `jobs` > 1 (None: one per core) first builds the runs in that many processes (`experiments.cached_cells`),
    the τ_topic values taken in turn so that their p'' are distilled side by side.
    """
    rule = rule or PremiseRule(max_new_tokens=config.metrics.max_new_tokens)
    low = config.low_recall
    swept_configs = {tau_topic: dataclasses.replace(config, low_recall=StageConfig(
        dataclasses.replace(low.data, tau_topic=tau_topic), low.train)) for tau_topic in tau_topics}
    cached_cells(store, interleaved([[PipelineCell(swept, alignment, seed, config.final_taus[:1])
                                      for alignment in alignments.values() for seed in seeds]
                                     for swept in swept_configs.values()]), jobs=jobs)
    rows = []
    for tau_topic, swept in swept_configs.items():
        refs = cached_references(store, swept, progress=progress)
        reference = cached_premise_check(store, refs.models, refs.recipes, refs.p_star, refs.target_topic,
                                         rule).shares.set_index("model").loc["p''"]
        base = {"tau_topic": tau_topic, "reference_target_share": reference["target_share"],
                "reference_target_share_low": reference["low"], "reference_target_share_high": reference["high"],
                "reference_ratio": reference["ratio"],
                "premise": reference["ratio"] <= rule.prune_to_at_most}
        for label, alignment in alignments.items():
            metrics = cached_run_pipelines(store, refs, alignment, list(seeds), label=label,
                                    final_taus=[config.final_taus[0]], progress=progress).metrics
            by_seed = metrics[metrics["seed"] >= 0].set_index(["model", "seed"])
            for seed in seeds:
                ka, ak = by_seed.loc[("p''_KA", seed)], by_seed.loc[("p''_AK", seed)]
                row = {"algorithm": label, "seed": seed, **base}
                for column, short in (("reward", "reward"), ("target_share", "target_share"),
                                      ("response_length", "length")):
                    row |= {f"ka_{short}": ka[column], f"ak_{short}": ak[column], f"gap_{short}": ak[column] - ka[column]}
                rows.append(row)
    columns = ["tau_topic", "algorithm", "seed"]
    frame = pd.DataFrame(rows)
    return frame[columns + [c for c in frame.columns if c not in columns]]


SWEEP_COLUMNS = ("gap_reward", "gap_target_share", "ka_target_share", "ak_target_share")


def sweep_intervals(sweep: pd.DataFrame, columns: Sequence[str] = SWEEP_COLUMNS) -> pd.DataFrame:
    """Per (tau_topic, algorithm): the K-A reference's target share with its Wilson interval, and the mean over
    seeds of each of `columns` with its 95 % bootstrap interval over seeds (`<column>`, `<column>_low`,
    `<column>_high`; a gap column's interval is the paired one of A-K and K-A by seed)."""
    rows = []
    for (tau_topic, label), part in sweep.groupby(["tau_topic", "algorithm"], sort=False):
        first = part.iloc[0]
        row = {"tau_topic": tau_topic, "algorithm": label, "n_seeds": len(part),
               **{name: first[name] for name in ("reference_target_share", "reference_target_share_low",
                                                 "reference_target_share_high", "reference_ratio", "premise")}}
        for column in columns:
            values = part[column].to_numpy()
            row[column], row[f"{column}_low"], row[f"{column}_high"] = paired_bootstrap(values, [0.0] * len(values))
        rows.append(row)
    return pd.DataFrame(rows)


def coverage_trend(sweep: pd.DataFrame, column: str = "gap_reward") -> pd.DataFrame:
    """Does `column` grow as p'' loses the target? Per algorithm: `column` at the τ_topic whose K-A reference
    has the lowest measured target share minus at the one with the highest, paired by seed, with its 95 %
    bootstrap interval (columns algorithm, low_share, high_share, estimate, low, high, n_seeds)."""
    rows = []
    for label, part in sweep.groupby("algorithm", sort=False):
        shares = part.groupby("tau_topic")["reference_target_share"].first()
        least, most = shares.idxmin(), shares.idxmax()
        by_seed = part.pivot_table(index="seed", columns="tau_topic", values=column).dropna()
        estimate, low, high = paired_bootstrap(by_seed[least].to_numpy(), by_seed[most].to_numpy())
        rows.append({"algorithm": label, "low_share": shares[least], "high_share": shares[most],
                     "estimate": estimate, "low": low, "high": high, "n_seeds": len(by_seed)})
    return pd.DataFrame(rows)
