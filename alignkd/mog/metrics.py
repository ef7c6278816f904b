"""The four metrics of §4.1 (eqs. 5–6): exact densities, Monte-Carlo expectations.

    Overall Precision     E_{x~q}[log p*(x)]         Target Precision  E_{x~q}[log p_target(x)]
    Overall Recall        E_{x~p*}[log q(x)]         Final Average Reward  E_{x~q}[R(x)]

Each expectation averages `n_samples` draws (default N_EVAL_SAMPLES = 10,000) per model row. The
samples come from the trial's own evaluation stream, so every setting of one trial is scored on the
same random numbers and a re-run gives identical numbers. With 10,000 samples the Monte-Carlo
standard error of Overall Recall of p' is ≈ 0.01 nats (its per-sample std is ≈ 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from .groundtruth import MODE_SPACING, SINGLE_TARGET, check_targets, log_p_star, log_p_target, reward, sample_p_star
from .mixture import Mixture, generators, uniforms

N_EVAL_SAMPLES = 10_000
METRICS = ("reward", "target_precision", "overall_recall", "overall_precision")
METRIC_LABELS = {
    "reward": "Final Average Reward",
    "target_precision": "Target Precision",
    "overall_recall": "Overall Recall",
    "overall_precision": "Overall Precision",
}


@torch.no_grad()
def evaluate(q: Mixture, targets: Sequence[int], seed: int, trials: list[int] | range,
             n_samples: int = N_EVAL_SAMPLES, spacing: float = MODE_SPACING) -> pd.DataFrame:
    """The four metrics of every row of q (rows = settings × trials, setting-major), against the p* whose
    modes are `spacing` apart.

    Returns one line per row with columns `row`, `trial` and the four METRICS.
    """
    targets = check_targets(targets)
    if n_samples < 1:
        raise ValueError(f"n_samples = {n_samples}: must be >= 1")
    if len(trials) == 0 or q.n_rows % len(trials):
        raise ValueError(f"evaluate: {q.n_rows} rows is not a multiple of {len(trials)} trials")
    n_settings = q.n_rows // len(trials)
    x_q = q.sample(n_samples, generators(seed, "eval/q", trials, n_settings))
    x_star = sample_p_star(uniforms(generators(seed, "eval/p_star", trials, n_settings), n_samples, 3), spacing)
    return pd.DataFrame({
        "row": range(q.n_rows),
        "trial": list(trials) * n_settings,
        "reward": reward(x_q, targets, spacing).mean(-1).numpy(),
        "target_precision": log_p_target(x_q, targets, spacing).mean(-1).numpy(),
        "overall_recall": q.log_prob(x_star).mean(-1).numpy(),
        "overall_precision": log_p_star(x_q, spacing).mean(-1).numpy(),
    })


def labelled_evaluation(q: Mixture, targets: Sequence[int], seed: int, trials: list[int] | range, n_samples: int,
                        labels: Mapping[str, object]) -> pd.DataFrame:
    """`evaluate` without its `row` column, led by one column per entry of `labels` in their order (a scalar
    labels every line; a list gives one value per line): the tables of the pipelines, the coverage study and
    PAD's comparison are built alike, so their lines line up across chapters."""
    metrics = evaluate(q, targets, seed, trials, n_samples).drop(columns="row")
    for position, (name, values) in enumerate(labels.items()):
        metrics.insert(position, name, values)
    return metrics


@torch.no_grad()
def normalised_rewards(q: Mixture, targets: Sequence[int] = SINGLE_TARGET, seed: int = 0,
                       trials: list[int] | range = (0,), n_samples: int = N_EVAL_SAMPLES) -> torch.Tensor:
    """[B, n_samples] oracle rewards R(x)/10 of samples of every row of q (Figure 2b), from the eval stream."""
    n_settings = q.n_rows // len(trials)
    x = q.sample(n_samples, generators(seed, "eval/q", list(trials), n_settings))
    return reward(x, check_targets(targets)) / 10.0


def top_reward_fraction(q: Mixture, targets: Sequence[int] = SINGLE_TARGET, seed: int = 0,
                        trials: list[int] | range = (0,), n_samples: int = N_EVAL_SAMPLES,
                        threshold: float = 0.9) -> torch.Tensor:
    """[B] fraction of q's samples whose normalised reward R/10 exceeds `threshold` (Figure 2b)."""
    return (normalised_rewards(q, targets, seed, trials, n_samples) > threshold).float().mean(-1)


def top_region_counts(rewards: Mapping[str, torch.Tensor], threshold: float, trials: Sequence[int]) -> pd.DataFrame:
    """Samples per trial whose normalised reward exceeds `threshold` (Figure 2b's top-reward region), one
    column per model of `rewards` (its [trials, n_samples] `normalised_rewards`), indexed by trial."""
    return pd.DataFrame({name: (r > threshold).sum(-1).double().numpy() for name, r in rewards.items()},
                        index=pd.Index(list(trials), name="trial"))
