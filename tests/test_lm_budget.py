"""The alignment budget as a dose: checkpoints of one run per seed, and the readings trapped / delayed."""

import copy
import math

import pandas as pd
import pytest
import torch

from alignkd.cache import ResultStore
from alignkd.lm.algorithms import ALGORITHMS, alignment_config
from alignkd.lm.budget import (READINGS, budget_config, budget_curves, budget_readings, cached_budget_dose,
                               cached_budget_run, check_budgets, reading, settled)
from alignkd.lm.experiments import cached_references

from test_lm_studies import CONFIG

GRPO = alignment_config("grpo_reward", n_iterations=2, batch_size=8, learning_rate=1e-2, max_new_tokens=6,
                        eval_every=2, device="cpu")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.set_num_threads(1)
    store = ResultStore("test", root=tmp_path_factory.mktemp("budget"))
    refs = cached_references(store, CONFIG, progress=False)
    dose = cached_budget_dose(store, refs, {"grpo_reward": GRPO}, [0, 1], budgets=[2, 4], final_tau=0.95,
                              progress=False)
    return store, refs, dose


def test_a_budget_checkpoint_is_the_run_of_that_many_iterations(built):
    """Evaluation draws from no training stream: the policy kept after 2 of 4 iterations is the final policy of a
    2-iteration run, and the 4-iteration policy has moved on from it. The dose trained its two seeds as one
    computation (`train_grpo_runs`), the run here alone: equal to float32 rounding (bitwise at these sizes)."""
    store, refs, _ = built
    _, models, trajectory = cached_budget_run(store, refs, "p''", GRPO, 0, [2, 4], progress=False)
    policy = refs.models["p''"].with_model(copy.deepcopy(refs.models["p''"].model))
    frozen = refs.models["p''"].with_model(copy.deepcopy(refs.models["p''"].model))
    ALGORITHMS["grpo_reward"].train(policy, frozen, refs.oracle, GRPO, seed=0, progress=False)
    short = policy.model.state_dict()
    for name, tensor in models[2].model.state_dict().items():
        torch.testing.assert_close(tensor, short[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(t, short[n]) for n, t in models[4].model.state_dict().items())
    assert list(trajectory["iteration"]) == [0, 2, 4]


def test_the_dose_has_every_model_after_every_budget(built):
    _, _, dose = built
    counts = dose.groupby(["model", "iteration"]).size().to_dict()
    assert counts == {("p''_KA", 2): 2, ("p''_KA", 4): 2, ("p'_AK", 2): 2, ("p'_AK", 4): 2,
                      ("p''_AK", 2): 2, ("p''_AK", 4): 2}
    assert dose["target_share"].between(0, 1).all() and dose["reward"].notna().all()
    assert (dose.loc[dose["model"] == "p''_AK", "final_tau"] == 0.95).all()


def test_the_dose_is_read_back_not_recomputed(built):
    store, refs, dose = built
    again = cached_budget_dose(store, refs, {"grpo_reward": GRPO}, [0, 1], budgets=[4, 2], final_tau=0.95,
                               progress=False)
    pd.testing.assert_frame_equal(dose, again)


def test_budgets_are_checked_and_the_run_evaluates_at_each():
    assert check_budgets([400, 50, 100]) == (50, 100, 400)
    for bad in ([50], [50, 50], [0, 10], [10, 2.5]):
        with pytest.raises(ValueError, match="budgets = .*at least two distinct integers >= 1"):
            check_budgets(bad)
    config = budget_config(alignment_config("ppo", eval_every=10), [50, 100, 200, 400])
    assert (config.n_iterations, config.eval_every) == (400, 10)
    assert budget_config(alignment_config("ppo", eval_every=10), [6, 15]).eval_every == 1


def _dose(ka: dict[int, list[float]], ak: dict[int, list[float]]) -> pd.DataFrame:
    rows = []
    for model, values in (("p''_KA", ka), ("p''_AK", ak)):
        for iteration, per_seed in values.items():
            rows += [{"algorithm": "x", "seed": s, "model": model, "iteration": iteration, "target_share": v}
                     for s, v in enumerate(per_seed)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ka_last, ak_last, expected", [
    ([0.01, 0.02, 0.015], [0.30, 0.32, 0.31], "trapped"),     # K-A stays where it was
    ([0.12, 0.13, 0.14], [0.30, 0.32, 0.31], "closing"),      # the gap holds but clearly shrinks
    ([0.30, 0.33, 0.29], [0.30, 0.32, 0.31], "delayed"),      # K-A got there
])
def test_readings_follow_the_gap_at_both_ends(ka_last, ak_last, expected):
    dose = _dose({50: [0.01, 0.02, 0.01], 400: ka_last}, {50: [0.30, 0.31, 0.29], 400: ak_last})
    row = budget_readings(dose).iloc[0]
    assert row["reading"] == expected
    assert (row["first"], row["last"], row["n_seeds"]) == (50, 400, 3)
    assert row["gap_first"] == pytest.approx(0.30 - 0.04 / 3)
    assert row["ka_change"] == pytest.approx(sum(ka_last) / 3 - 0.04 / 3)
    assert settled(budget_readings(dose), 50) == (expected == "trapped")


def test_a_gap_that_opens_only_with_more_steps():
    dose = _dose({50: [0.30, 0.31, 0.29], 400: [0.30, 0.31, 0.30]}, {50: [0.30, 0.30, 0.30], 400: [0.60, 0.62, 0.61]})
    row = budget_readings(dose).iloc[0]
    assert row["reading"] == "opens" and not settled(budget_readings(dose), 50)


def test_no_gap_and_too_few_seeds():
    same = _dose({50: [0.2, 0.3, 0.25], 400: [0.2, 0.3, 0.25]}, {50: [0.25, 0.2, 0.3], 400: [0.3, 0.2, 0.25]})
    assert budget_readings(same).iloc[0]["reading"] == "no gap"
    one = _dose({50: [0.0], 400: [0.0]}, {50: [0.3], 400: [0.3]})
    assert budget_readings(one).iloc[0]["reading"] == "not testable"
    assert set(READINGS) >= {reading({"gap_first_low": math.nan, "gap_last_low": 0.0})}


def test_curves_have_intervals_over_seeds(built):
    _, _, dose = built
    curves = budget_curves(dose, "target_share")
    assert len(curves) == 6 and (curves["n_seeds"] == 2).all()
    assert ((curves["low"] <= curves["mean"]) & (curves["mean"] <= curves["high"])).all()


def test_every_algorithm_says_how_it_anchors():
    anchors = {name: entry.config().reference_anchor() for name, entry in ALGORITHMS.items()}
    assert anchors["grpo_reward"].startswith("reverse KL") and "forward" in anchors["grpo"]
    assert anchors["simpo"].startswith("none")
    assert len(set(anchors.values())) == len(anchors)


def test_the_budget_figure_has_a_panel_per_metric_and_algorithm_with_the_budgets_as_ticks(built):
    import matplotlib

    matplotlib.use("Agg")
    from alignkd.lm.plots import budget_figure

    _, _, dose = built
    fig = budget_figure(dose)
    assert len(fig.axes) == 2  # target share and reward, one algorithm
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["2", "4"]
    assert fig.axes[0].get_legend_handles_labels()[1] == ["p''_KA", "p'_AK", "p''_AK"]
