"""The paper's premise, checked before any alignment: p' kept the rare target topic and p'' lost it.

The argument of §4.2 needs a high-recall reference p' that still writes the target behaviour and a
low-recall reference p'' that has (mostly) lost it. On the synthetic language this is measurable: the
*target share* of a model is the fraction of its own samples whose most probable topic under p* is the
target topic (`metrics.target_share`). The rule is fixed before alignment runs (issue 11):

    share(p')  >= keep_at_least    · share(p*)     (default 75 %: p' kept the target)
    share(p'') <= prune_to_at_most · share(p*)     (default 25 %: p'' lost it)

each share measured on at least 10 000 of the model's own samples at τ = 1. `premise_check` returns a
`PremiseCheck` with the shares, their 95 % (Wilson) intervals and the verdict (`check.verdict()`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..validation import require_int
from .groundtruth import MarkovMixture
from .metrics import COLUMNS_VERSION, target_share
from .models import LanguageModel

MIN_PREMISE_SAMPLES = 10_000
HIGH, LOW = "p'", "p''"


@dataclass(frozen=True)
class PremiseRule:
    """How the premise is measured and what passes (fixed before alignment)."""

    keep_at_least: float = 0.75
    """p' must keep at least this fraction of p*'s target share."""
    prune_to_at_most: float = 0.25
    """p'' may keep at most this fraction of p*'s target share."""
    n_samples: int = MIN_PREMISE_SAMPLES
    """Samples of each model the shares are measured on (>= 10 000)."""
    max_new_tokens: int = 24
    """Response length cap of those samples (the chapter's)."""
    seed: int = 4242

    def __post_init__(self):
        require_int(self, "n_samples", minimum=MIN_PREMISE_SAMPLES)
        require_int(self, "max_new_tokens")
        if not 0 < self.prune_to_at_most < self.keep_at_least <= 1:
            raise ValueError(f"PremiseRule: need 0 < prune_to_at_most ({self.prune_to_at_most}) < keep_at_least "
                             f"({self.keep_at_least}) <= 1")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    if n < 1:
        raise ValueError(f"n = {n}: need at least one trial")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def topic_shares(models: Mapping[str, LanguageModel], p_star: MarkovMixture, target_topic: int, *,
                 n_samples: int = MIN_PREMISE_SAMPLES, max_new_tokens: int = 24, seed: int = 4242) -> pd.DataFrame:
    """Target share of each model's own samples (τ = 1): columns model, share, low, high (95 % Wilson), n,
    mean_length (mean response tokens of those samples) and ratio (share / share of the model named "p*",
    NaN when there is none)."""
    if not isinstance(p_star, MarkovMixture):
        raise ValueError("target shares need the markov_mixture ground truth (real LMs have no topic labels)")
    rows = []
    for name, model in models.items():
        samples = model.sample(n_samples, max_new_tokens, 1.0, seed=seed)
        share = target_share(p_star, samples, target_topic)
        low, high = wilson_interval(round(share * len(samples)), len(samples))
        rows.append({"model": name, "target_share": share, "low": low, "high": high, "n": len(samples),
                     "mean_length": float(samples.response_lengths.double().mean())})
    table = pd.DataFrame(rows)
    base = table.loc[table["model"] == "p*", "target_share"]
    table["ratio"] = table["target_share"] / float(base.iloc[0]) if len(base) else math.nan
    return table


@dataclass(frozen=True)
class PremiseCheck:
    """Measured target shares of p*, p', p'' and the verdict of the rule."""

    rule: PremiseRule
    shares: pd.DataFrame = field(repr=False)
    """`topic_shares` of p*, p', p''."""

    def share(self, model: str) -> float:
        return float(self.shares.set_index("model").loc[model, "target_share"])

    def ratio(self, model: str) -> float:
        return self.share(model) / self.share("p*")

    @property
    def kept(self) -> bool:
        """p' kept at least `keep_at_least` of p*'s target share."""
        return self.ratio("p'") >= self.rule.keep_at_least

    @property
    def pruned(self) -> bool:
        """p'' kept at most `prune_to_at_most` of p*'s target share."""
        return self.ratio("p''") <= self.rule.prune_to_at_most

    @property
    def prune_bound(self) -> float:
        """The largest target share p'' may keep: `prune_to_at_most` of p*'s."""
        return self.rule.prune_to_at_most * self.share("p*")

    @property
    def passed(self) -> bool:
        return self.kept and self.pruned

    def verdict(self) -> str:
        """One paragraph: the shares, the ratios against the rule, PASS or FAIL and what a failure means."""
        rule = self.rule
        table = self.shares.set_index("model")

        def describe(model: str) -> str:
            row = table.loc[model]
            return f"{model} {row['target_share']:.2%} [{row['low']:.2%}, {row['high']:.2%}]"

        head = (f"Premise (rule fixed before alignment: p' ≥ {rule.keep_at_least:.0%} and p'' ≤ "
                f"{rule.prune_to_at_most:.0%} of p*'s target share, on {rule.n_samples} own samples each): target "
                f"share {describe('p*')}, {describe(HIGH)}, {describe(LOW)}; "
                f"p' keeps {self.ratio(HIGH):.0%} ({'≥' if self.kept else '<'} "
                f"{rule.keep_at_least:.0%}), p'' keeps {self.ratio(LOW):.0%} "
                f"({'≤' if self.pruned else '>'} {rule.prune_to_at_most:.0%}).")
        if self.passed:
            return f"PREMISE PASSES. {head}"
        why = []
        if not self.kept:
            why.append("p' did not keep the target, so A-K starts from a reference that has lost it too")
        if not self.pruned:
            why.append("p'' did not lose the target, so K-A's reference is not the low-recall trap the paper "
                       "describes and any gap between the pipelines is not evidence for its mechanism")
        return f"PREMISE FAILS: {'; '.join(why)}. {head}"


def premise_check(models: Mapping[str, LanguageModel], p_star: MarkovMixture, target_topic: int,
                  rule: PremiseRule = PremiseRule()) -> PremiseCheck:
    """Measure the target shares of `models["p*"]`, `models["p'"]`, `models["p''"]` and judge the premise."""
    missing = [name for name in ("p*", "p'", "p''") if name not in models]
    if missing:
        raise ValueError(f"premise_check needs models p*, p', p''; missing {missing}")
    chosen = {name: models[name] for name in ("p*", "p'", "p''")}
    shares = topic_shares(chosen, p_star, target_topic, n_samples=rule.n_samples,
                          max_new_tokens=rule.max_new_tokens, seed=rule.seed)
    return PremiseCheck(rule, shares)


def cached_premise_check(store, models: Mapping[str, LanguageModel], recipes: Mapping[str, Any], p_star: MarkovMixture,
                         target_topic: int, rule: PremiseRule = PremiseRule()) -> PremiseCheck:
    """`premise_check`, each model's share cached in `store` under its recipe (cache key), the target and the rule.

    One entry per model, so checks that share p* and p' (a sweep over the sharpening of p'') sample those
    once; each model is sampled with the rule's seed alone, so the shares are `premise_check`'s."""
    missing = [name for name in ("p*", "p'", "p''") if name not in models]
    if missing:
        raise ValueError(f"cached_premise_check needs models p*, p', p''; missing {missing}")
    rows = []
    for name in ("p*", "p'", "p''"):
        key = {"model": recipes[name], "target_topic": target_topic, "rule": rule, "columns": COLUMNS_VERSION}
        measure = lambda name=name: topic_shares(  # noqa: E731
            {name: models[name]}, p_star, target_topic, n_samples=rule.n_samples, max_new_tokens=rule.max_new_tokens,
            seed=rule.seed)
        rows.append(store.frame("lm_topic_share", key, measure).assign(model=name))
    shares = pd.concat(rows, ignore_index=True)
    shares["ratio"] = shares["target_share"] / float(shares["target_share"].iloc[0])
    return PremiseCheck(rule, shares)


def training_curve(store, recipe: Any) -> pd.DataFrame:
    """The training log (`kd.train_student` columns) of a cached student, by the recipe it is stored under."""
    path = store.path("lm_student", recipe, suffix="") / "train_log.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no trained student under {path.parent}: build it first "
                                "(experiments.cached_references)")
    return pd.read_parquet(path)


def premise_figure(check: PremiseCheck, curves: Mapping[str, pd.DataFrame]):
    """Left: held-out loss of each student against epochs (the decay phase dashed); right: target shares
    with 95 % intervals and the rule's two bounds."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 2.8), constrained_layout=True)
    palette = dict(zip(curves, sns.color_palette("deep", len(curves))))
    for name, log in curves.items():
        points = log[log["eval_loss"].notna()]
        stable = points[points["phase"] != "decay"]
        left.plot(stable["epoch"], stable["eval_loss"], marker="o", ms=3, color=palette[name], label=name)
        decay = pd.concat([stable.tail(1), points[points["phase"] == "decay"]])
        left.plot(decay["epoch"], decay["eval_loss"], ls="--", marker="o", ms=3, color=palette[name])
    left.set(xlabel="epoch", ylabel="held-out loss (nats/token)", title="students (dashed: decay)")
    left.legend(frameon=False)
    table = check.shares
    base = check.share("p*")
    right.bar(table["model"], table["target_share"] * 100, color=sns.color_palette("deep", len(table)),
              yerr=[(table["target_share"] - table["low"]) * 100, (table["high"] - table["target_share"]) * 100],
              capsize=3)
    right.axhline(check.rule.keep_at_least * base * 100, color="0.3", ls=":", lw=1)
    right.axhline(check.rule.prune_to_at_most * base * 100, color="0.3", ls="--", lw=1)
    right.set(ylabel="target share (%)", title=f"premise: {'passes' if check.passed else 'FAILS'}")
    right.text(2.45, check.rule.keep_at_least * base * 100, f"p' ≥ {check.rule.keep_at_least:.0%}", va="bottom",
               ha="right", fontsize=8)
    right.text(2.45, check.rule.prune_to_at_most * base * 100, f"p'' ≤ {check.rule.prune_to_at_most:.0%}",
               va="bottom", ha="right", fontsize=8)
    return fig
