"""Response length as a primary metric, and reward gaps at matched length (issue 11.4).

The paper's reward is a per-token average (App. C.3), so it does not grow with length, but it is not
length-neutral either: the first tokens and EOS have their own costs under p_target, and a policy can
move its reward by moving its length. So every model's mean response length is reported beside its
reward, and a gap between two models is also measured *at matched length*: within each response
length both models produce, the difference of their mean rewards, averaged with the pooled number of
samples at that length as weights (exact stratification on length, the strata both models share).

    per_sample = reward_samples(model, oracle, n, max_new_tokens, seed)   # DataFrame: length, reward
    gap = length_matched_gap(per_sample_a, per_sample_b)                   # LengthMatchedGap
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


def reward_samples(model, oracle, n: int, max_new_tokens: int, *, seed: int) -> pd.DataFrame:
    """`n` samples of `model` (τ = 1) with their response length (tokens, EOS included) and folded reward."""
    samples = model.sample(n, max_new_tokens, 1.0, seed=seed)
    return pd.DataFrame({"length": samples.response_lengths.numpy(),
                         "reward": oracle.reward(samples).double().numpy()})


@dataclass(frozen=True)
class LengthMatchedGap:
    """Mean reward of a minus b, raw and at matched length."""

    raw: float
    """mean(reward_a) − mean(reward_b)."""
    matched: float
    """Σ_ℓ w_ℓ (mean_a(ℓ) − mean_b(ℓ)) over lengths ℓ with >= min_count samples of each, w_ℓ ∝ n_a(ℓ) + n_b(ℓ)."""
    coverage_a: float
    """Share of a's samples at the matched lengths."""
    coverage_b: float
    mean_length_a: float
    mean_length_b: float

    def describe(self, a: str, b: str) -> str:
        return (f"reward {a} − {b}: {self.raw:+.3f} raw, {self.matched:+.3f} at matched length (mean length "
                f"{self.mean_length_a:.1f} vs {self.mean_length_b:.1f} tokens; the matched lengths hold "
                f"{self.coverage_a:.0%} of {a}'s and {self.coverage_b:.0%} of {b}'s samples)")


def length_matched_gap(a: pd.DataFrame, b: pd.DataFrame, *, min_count: int = 20) -> LengthMatchedGap:
    """Reward gap a − b raw and stratified on response length (frames with columns length, reward)."""
    if min_count < 1:
        raise ValueError(f"min_count = {min_count}: must be >= 1")
    by_length = [frame.groupby("length")["reward"].agg(["mean", "size"]) for frame in (a, b)]
    both = by_length[0].merge(by_length[1], left_index=True, right_index=True, suffixes=("_a", "_b"))
    both = both[(both["size_a"] >= min_count) & (both["size_b"] >= min_count)]
    if both.empty:
        matched = float("nan")
    else:
        weight = both["size_a"] + both["size_b"]
        matched = float(((both["mean_a"] - both["mean_b"]) * weight).sum() / weight.sum())
    return LengthMatchedGap(raw=float(a["reward"].mean() - b["reward"].mean()), matched=matched,
                            coverage_a=float(both["size_a"].sum() / len(a)), coverage_b=float(both["size_b"].sum() / len(b)),
                            mean_length_a=float(a["length"].mean()), mean_length_b=float(b["length"].mean()))
