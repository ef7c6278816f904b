"""Model selection for LLM alignment (paper App. C.4) and the record every alignment run returns.

    run = train_ppo(...)                    # or train_dpo / train_grpo: an AlignmentRun
    run.trajectory                          # DataFrame, one row per evaluation step
    run.checkpoints[step]                   # CPU state_dict (or what on_eval returned) at that step
    run.selected_step                       # chosen by the rule below

    select_ppo(trajectory)                  # last checkpoint before the reward std falls sharply
    select_dpo(trajectory)                  # checkpoint of peak reward margin

`RunConfig` holds the fields every alignment config shares (rollout temperature, gradient
clipping, evaluation cadence, hardware); `PPOConfig`, `DPOConfig` and `GRPOConfig` extend it.

Both rules are functions of the trajectory table alone, so the book can plot a trajectory, mark
the selected step, and re-select with other settings without re-training.

Trajectory columns (all runs): `iteration` (number of optimiser iterations done before the row's
samples were drawn; 0 is the initial policy), `reward_mean`, `reward_std` (folded oracle reward of
the policy's samples), `nll_mean` (per-token NLL under p_target), `kl` (mean over samples of the
sequence log-ratio Σ_t log π/π_ref, an unbiased estimate of KL(π ‖ π_ref)). DPO adds the four
App. C.4 / Fig. 14 quantities as TRL's DPOTrainer logs them (implicit rewards β·log π/π_ref summed
over response tokens, on the iteration's freshly generated pairs): `chosen_reward`,
`rejected_reward`, `margin`, `accuracy`; and the oracle's view of the same pairs:
`chosen_oracle_reward`, `rejected_oracle_reward`, `n_pairs` (untied pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..validation import require_int, require_positive


@dataclass
class AlignmentRun:
    """What `train_ppo`, `train_dpo` and `train_grpo` return.

    trajectory: one row per evaluation step (columns in the module docstring).
    checkpoints: evaluation step -> CPU copy of the policy state_dict, or whatever the caller's
        `on_eval(step, policy)` returned at that step.
    selected_step: the iteration chosen by the algorithm's App. C.4 rule.
    algorithm: "ppo", "dpo" or "grpo".
    """

    trajectory: pd.DataFrame
    checkpoints: dict[int, Any] = field(default_factory=dict)
    selected_step: int = 0
    algorithm: str = ""

    @property
    def selected(self) -> Any:
        """The checkpoint (or on_eval result) at the selected step."""
        return self.checkpoints[self.selected_step]

    @property
    def final_step(self) -> int:
        return int(self.trajectory["iteration"].iloc[-1])


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


def select_last(trajectory: pd.DataFrame) -> int:
    """No early stopping: the final checkpoint."""
    return int(trajectory["iteration"].max())


# ---------------------------------------------------------------------------------------------
# Bookkeeping shared by the three trainers (train_ppo, train_dpo, train_grpo).

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str, bf16: bool, owner: str) -> None:
    """Fail before any compute when a config asks for hardware this machine lacks."""
    import torch

    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"{owner}.device = {device!r}: must be one of {', '.join(DEVICES)} (or 'cuda:N')")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{owner}.device = {device!r} asks for a GPU but torch sees none (use 'cpu' or 'auto')")
    if bf16 and not torch.cuda.is_available():
        raise ValueError(f"{owner}.bf16 = True needs a CUDA GPU (bf16 autocast), but torch sees none: set bf16=False")
    if bf16 and device == "cpu":
        raise ValueError(f"{owner}.bf16 = True with device = 'cpu': bf16 autocast is for the GPU; set bf16=False")


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device, bf16: bool):
    """bf16 autocast on CUDA when asked (the paper trains in bf16, App. C), else a no-op context."""
    import contextlib

    import torch

    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def snapshot(step: int, policy, on_eval) -> Any:
    """What a run keeps at an evaluation step: on_eval(step, policy) if given, else a CPU state_dict copy."""
    if on_eval is not None:
        return on_eval(step, policy)
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in policy.state_dict().items()}


def iteration_seed(seed: int, iteration: int) -> int:
    """Sampling seed of one iteration: distinct per (seed, iteration), identical across runs."""
    return (seed * 1_000_003 + iteration) % (2**63 - 1)


@dataclass
class RunConfig:
    """The fields every LLM alignment config shares (App. C.3 for the values)."""

    tau: float = 1.0
    """Sampling temperature τ of the rollouts (App. C.3: τ = 1.0); no top-k, no top-p."""
    max_grad_norm: float = 0.0
    """Clip the gradient norm at this value; 0 = no clipping (TRL 0.9.6's default)."""
    eval_every: int = 10
    """Record a trajectory row and a checkpoint every this many iterations (and at 0 and the end).
    Without `on_eval` each checkpoint is a CPU copy of the state_dict (≈ 0.5 GB at SmolLM2-135M in
    fp32): at the paper's scale pass an `on_eval` that writes to disk, or evaluate less often."""
    device: str = "auto"
    """"auto" (CUDA if present), "cpu", "cuda" or "cuda:N"."""
    bf16: bool = False
    """bf16 autocast for forward passes (the paper trains in bf16); needs a CUDA GPU."""

    def __post_init__(self):
        require_positive(self, "tau")
        require_int(self, "eval_every")
        if not self.max_grad_norm >= 0:
            raise ValueError(f"{type(self).__name__}.max_grad_norm = {self.max_grad_norm!r}: must be >= 0")
        check_device(self.device, self.bf16, type(self).__name__)
