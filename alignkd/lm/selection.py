"""Model selection for LLM alignment (paper App. C.4), as functions of a run's trajectory table.

    select_ppo(trajectory)                  # last checkpoint before the reward std falls sharply
    select_dpo(trajectory)                  # checkpoint of peak reward margin

Both rules read the trajectory alone (columns: `alignkd.lm.training`), so the book can plot a
trajectory, mark the selected step, and re-select with other settings without re-training.
"""

from __future__ import annotations

import pandas as pd


def _smoothed(trajectory: pd.DataFrame, column: str, window: int) -> pd.Series:
    if column not in trajectory.columns:
        raise KeyError(f"trajectory has no column '{column}' (columns: {', '.join(trajectory.columns)})")
    if window < 1:
        raise ValueError(f"window = {window!r}: must be >= 1")
    ordered = trajectory.sort_values("iteration").reset_index(drop=True)
    return ordered[column].rolling(window, center=True, min_periods=1).mean()


def find_std_collapse(trajectory: pd.DataFrame, drop_fraction: float = 0.5, window: int = 1) -> int | None:
    """First iteration at which the reward std (centred rolling mean over `window` steps) has fallen below
    (1 − drop_fraction) × its running peak, or None when it never falls that far."""
    if not 0.0 < drop_fraction < 1.0:
        raise ValueError(f"drop_fraction = {drop_fraction!r}: must be in (0, 1)")
    ordered = trajectory.sort_values("iteration").reset_index(drop=True)
    std = _smoothed(ordered, "reward_std", window)
    running_peak = std.cummax()
    fallen = std < (1.0 - drop_fraction) * running_peak
    if not fallen.any():
        return None
    return int(ordered["iteration"][fallen.idxmax()])


def select_ppo(trajectory: pd.DataFrame, drop_fraction: float = 0.5, window: int = 1) -> int:
    """App. C.4, PPO: the checkpoint with the highest mean reward among those *before* the reward std
    falls sharply (the onset of mode collapse); with no sharp fall, the highest mean reward overall.

    "Sharply" = the std drops below (1 − drop_fraction) of its running peak. With `window` > 1 both
    series are first smoothed by a centred rolling mean over that many evaluation steps (each
    evaluation is one batch of samples, so noisy); smoothing spreads a fall over neighbouring steps
    and so can move the detected fall later. Ties in mean reward go to the later checkpoint.
    """
    ordered = trajectory.sort_values("iteration").reset_index(drop=True)
    collapse = find_std_collapse(ordered, drop_fraction, window)
    mean = _smoothed(ordered, "reward_mean", window)
    eligible = ordered["iteration"] < collapse if collapse is not None else ordered["iteration"] >= 0
    if not eligible.any():  # collapse at the very first evaluation: only the initial policy is safe
        return int(ordered["iteration"].iloc[0])
    candidates = mean[eligible]
    best = candidates[candidates == candidates.max()].index[-1]
    return int(ordered["iteration"][best])


def select_dpo(trajectory: pd.DataFrame, column: str = "margin", window: int = 1) -> int:
    """App. C.4, DPO: the checkpoint of peak reward margin (first one on ties).

    `column` = "margin" is the paper's rule on TRL's implicit-reward margin; "oracle_margin"-style
    columns can be passed to select on another series. `window` > 1 smooths before the argmax.
    """
    ordered = trajectory.sort_values("iteration").reset_index(drop=True)
    series = _smoothed(ordered, column, window)
    return int(ordered["iteration"][series.idxmax()])
