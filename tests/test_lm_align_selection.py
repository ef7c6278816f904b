"""App. C.4 model selection on synthetic trajectories whose right answer is known."""

import numpy as np
import pandas as pd
import pytest

from alignkd.lm.selection import find_std_collapse, select_dpo, select_ppo
from alignkd.lm.training import AlignmentRun


def ppo_trajectory():
    """Mean reward rises throughout; the std rises with it, then halves between iterations 60 and 70."""
    iteration = np.arange(0, 110, 10)
    reward_mean = np.linspace(2.0, 9.0, len(iteration))
    reward_std = np.array([0.3, 0.5, 0.8, 1.0, 1.2, 1.3, 1.4, 0.5, 0.3, 0.2, 0.2])
    return pd.DataFrame({"iteration": iteration, "reward_mean": reward_mean, "reward_std": reward_std})


def test_ppo_rule_picks_the_last_checkpoint_before_the_std_collapses():
    trajectory = ppo_trajectory()
    assert find_std_collapse(trajectory) == 70
    assert select_ppo(trajectory) == 60  # the reward keeps rising after 60, but diversity is gone


def test_ppo_rule_prefers_higher_reward_before_the_collapse_and_ignores_row_order():
    trajectory = ppo_trajectory()
    trajectory.loc[trajectory.iteration == 50, "reward_mean"] = 9.5  # a reward peak before the collapse
    assert select_ppo(trajectory.sample(frac=1.0, random_state=0)) == 50


def test_ppo_rule_without_collapse_takes_the_best_reward():
    trajectory = ppo_trajectory()
    trajectory["reward_std"] = 1.0 + 0.1 * np.sin(trajectory.iteration)  # noise, never a sharp fall
    assert find_std_collapse(trajectory) is None
    assert select_ppo(trajectory) == 100


def test_ppo_rule_drop_fraction_and_smoothing():
    trajectory = ppo_trajectory()
    # a 30 % threshold also fires at 70; a 90 % one never does
    assert find_std_collapse(trajectory, drop_fraction=0.3) == 70
    assert find_std_collapse(trajectory, drop_fraction=0.9) is None
    # centred 3-step smoothing: [.., 1.3, 1.0667, 0.7333, 0.3333, ..] from 50 on: below half its peak 1.3 at 80
    assert find_std_collapse(trajectory, window=3) == 80
    assert select_ppo(trajectory, window=3) == 70


def test_dpo_rule_picks_the_peak_margin():
    iteration = np.arange(0, 200, 20)
    margin = np.array([0.0, 0.2, 0.5, 0.9, 1.4, 1.1, 0.6, 0.3, 0.1, 0.05])
    trajectory = pd.DataFrame({"iteration": iteration, "margin": margin, "accuracy": np.linspace(0.5, 0.0, 10)})
    assert select_dpo(trajectory) == 80
    assert select_dpo(trajectory, column="accuracy") == 0
    with pytest.raises(KeyError, match="oracle_margin"):
        select_dpo(trajectory, column="oracle_margin")


def test_alignment_run_gives_the_selected_checkpoint():
    trajectory = ppo_trajectory()
    run = AlignmentRun(trajectory, {int(i): f"state@{i}" for i in trajectory.iteration}, select_ppo(trajectory))
    assert run.selected == "state@60" and run.final_step == 100
