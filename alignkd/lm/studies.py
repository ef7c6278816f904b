"""Studies on chapter 06's references (issue 11): reward gaps at matched length, recall against capacity.

    gaps = length_gaps(store, refs, alignments, seeds, final_tau=0.95)       # A-K − K-A, raw and at matched length
    grid = capacity_grid(store, refs, alignment, seeds)                      # the 2 × 2 of K-A references
    parts = gap_decomposition(grid, metrics, label)                          # how much is lost target, how much size

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
from .config import StageConfig
from .experiments import References, align, distilled, final_stage, references, run_pipelines, student
from .length import length_matched_gap, reward_samples

LENGTH_SEED = 777


def length_gaps(store: ResultStore, refs: References, alignments: Mapping[str, Any], seeds: Sequence[int], *,
                final_tau: float, n_samples: int = 2000, min_count: int = 20) -> pd.DataFrame:
    """Per algorithm label and seed: final reward of A-K (p''_AK at `final_tau`) minus K-A (p''_KA), raw and at
    matched response length (`length.length_matched_gap`), with both mean lengths. Reads the cached models
    of `experiments.run_pipelines` (it builds any that are missing)."""
    rows = []
    for label, alignment in alignments.items():
        for seed in seeds:
            ka = align(store, refs, "p''", alignment, seed, progress=False)
            ak = align(store, refs, "p'", alignment, seed, progress=False)
            final = student(store, distilled(ak.recipe, final_stage(refs.config, final_tau, seed)), ak.model,
                            refs.p_star, progress=False)
            cap = refs.config.metrics.max_new_tokens
            a = reward_samples(final, refs.oracle, n_samples, cap, seed=LENGTH_SEED + seed)
            b = reward_samples(ka.model, refs.oracle, n_samples, cap, seed=LENGTH_SEED + seed)
            gap = length_matched_gap(a, b, min_count=min_count)
            rows.append({"algorithm": label, "seed": seed, **dataclasses.asdict(gap)})
    return pd.DataFrame(rows)


def grid_stage(refs: References, size: str, tau_topic: float) -> StageConfig:
    """p'''s KD stage with another student size and topic sharpening."""
    low = refs.config.low_recall
    return StageConfig(dataclasses.replace(low.data, tau_topic=tau_topic), dataclasses.replace(low.train, size=size))


def capacity_grid(store: ResultStore, refs: References, alignment, seeds: Sequence[int], *, label: str,
                  sizes: Sequence[str] | None = None, tau_topics: Sequence[float] | None = None,
                  progress: bool = True) -> pd.DataFrame:
    """K-A on a grid of references: rows size, tau_topic, pruned, seed (−1 for the reference before alignment),
    stage (`reference` / `aligned`) and every metric of `refs.evaluate`. Default grid: the sizes of p' and p''
    × the chapter's τ_topic and 1 (no pruning)."""
    config = refs.config
    sizes = list(dict.fromkeys(sizes or (config.high_recall.train.size, config.low_recall.train.size)))
    tau_topics = list(dict.fromkeys(tau_topics or (config.low_recall.data.tau_topic, 1.0)))
    key = {"references": refs.recipes, "oracle": refs.oracle_recipe, "alignment": alignment, "seeds": list(seeds),
           "sizes": sizes, "tau_topics": tau_topics, "metrics": config.metrics, "n_recall": config.n_recall_samples}

    def compute() -> pd.DataFrame:
        rows = []
        for size in sizes:
            for tau_topic in tau_topics:
                recipe = distilled(refs.recipes["p'"], grid_stage(refs, size, tau_topic))
                model = student(store, recipe, refs.models["p'"], refs.p_star, progress=progress)
                name = f"ref {size} τ_topic {tau_topic:g}"
                cell = dataclasses.replace(refs, models={**refs.models, name: model},
                                           recipes={**refs.recipes, name: recipe})
                base = {"size": size, "tau_topic": tau_topic, "pruned": tau_topic < 1}
                rows.append({**base, "seed": -1, "stage": "reference", **refs.evaluate(model)})
                for seed in seeds:
                    run = align(store, cell, name, alignment, seed, progress=progress)
                    rows.append({**base, "seed": seed, "stage": "aligned", **refs.evaluate(run.model)})
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


def coverage_sweep(store: ResultStore, config, alignments: Mapping[str, Any], seeds: Sequence[int], *,
                   tau_topics: Sequence[float], rule=None, progress: bool = True) -> pd.DataFrame:
    """The gap against coverage (issue 11.3): for each τ_topic, p'' (and A-K's final KD) distilled with that
    sharpening, the premise shares measured, and K-A / A-K run for every alignment and seed.

    One row per (tau_topic, algorithm, seed): the measured target share of p'' and its ratio to p*'s, and
    A-K − K-A in final reward and in final target share (A-K's final KD at the config's first τ)."""
    from .premise import PremiseRule, cached_premise_check

    rule = rule or PremiseRule(max_new_tokens=config.metrics.max_new_tokens)
    rows = []
    for tau_topic in tau_topics:
        low = config.low_recall
        swept = dataclasses.replace(config, low_recall=StageConfig(dataclasses.replace(low.data, tau_topic=tau_topic),
                                                                   low.train))
        refs = references(swept, store, progress=progress)
        check = cached_premise_check(store, refs.models, refs.recipes, refs.p_star, refs.target_topic, rule)
        for label, alignment in alignments.items():
            metrics = run_pipelines(store, refs, alignment, list(seeds), label=label,
                                    final_taus=[config.final_taus[0]], progress=progress).metrics
            by_seed = metrics[metrics["seed"] >= 0].set_index(["model", "seed"])
            for seed in seeds:
                ak, ka = by_seed.loc[("p''_AK", seed)], by_seed.loc[("p''_KA", seed)]
                rows.append({"tau_topic": tau_topic, "algorithm": label, "seed": seed,
                             "share_low": check.share("p''"), "ratio_low": check.ratio("p''"), "premise": check.passed,
                             "gap_reward": ak["reward"] - ka["reward"],
                             "gap_target_mass": ak["target_mass"] - ka["target_mass"]})
    return pd.DataFrame(rows)


def sweep_intervals(sweep: pd.DataFrame, column: str = "gap_reward") -> pd.DataFrame:
    """Mean of `column` over seeds per (tau_topic, algorithm) with its 95 % bootstrap interval (over seeds)."""
    from ..stats import paired_bootstrap

    rows = []
    for (tau_topic, label), part in sweep.groupby(["tau_topic", "algorithm"], sort=False):
        values = part[column].to_numpy()
        estimate, low, high = paired_bootstrap(values, [0.0] * len(values))
        rows.append({"tau_topic": tau_topic, "algorithm": label, "share_low": part["share_low"].iloc[0],
                     "ratio_low": part["ratio_low"].iloc[0], "premise": bool(part["premise"].iloc[0]),
                     "mean": estimate, "low": low, "high": high, "n_seeds": len(values)})
    return pd.DataFrame(rows)
