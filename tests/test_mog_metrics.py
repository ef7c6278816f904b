"""Figure 2's top-reward counts and its comparison sentence (chapter 02), by hand."""

import pandas as pd
import pytest
import torch

from alignkd.mog.metrics import figure2_sentence, figure2_table, top_region_counts

REFERENCE = "p''_3 (β_KD=1.25)"


def test_top_region_counts_count_rewards_above_the_threshold():
    rewards = {"p'": torch.tensor([[0.95, 0.91, 0.2], [0.9, 0.99, 1.0]]),
               REFERENCE: torch.tensor([[0.1, 0.2, 0.3], [0.95, 0.5, 0.5]])}
    top = top_region_counts(rewards, 0.9, trials=[3, 7])
    assert top.index.name == "trial" and list(top.index) == [3, 7]
    assert top.loc[3, "p'"] == 2 and top.loc[7, "p'"] == 2  # 0.9 itself is not above 0.9
    assert list(top[REFERENCE]) == [0, 1]


def test_figure2_sentence_numbers():
    recall = pd.DataFrame({"p'": [-3.0, -3.1, -2.9, -3.5], REFERENCE: [-3.2, -3.0, -3.3, -3.6]},
                          index=pd.Index([0, 1, 2, 3], name="trial"))
    top = pd.DataFrame({"p'": [40.0, 30.0, 25.0, 10.0], REFERENCE: [10.0, 0.0, 20.0, 10.0]}, index=recall.index)
    sentence = figure2_sentence(recall, top, REFERENCE, n_samples=1000, threshold=0.9)
    # wins in trials 0, 2, 3; ratios 4, 30 (0 floored at 1), 1.25, 1 -> median (1.25 + 4) / 2
    assert "p' has the higher recall in 75% of 4 trials" in sentence
    assert "and 26 versus 10 of 1000 samples in the region R/10 > 0.9 (median per-trial ratio 2.62)." in sentence
    assert sentence.startswith("The paper reports that p' always has the higher Overall Recall")


def test_figure2_sentence_needs_both_models():
    recall = pd.DataFrame({"p'": [-3.0]})
    with pytest.raises(KeyError):
        figure2_sentence(recall, recall, REFERENCE, n_samples=10, threshold=0.9)


def test_figure2_table_by_hand():
    top = pd.DataFrame({"p'": [4.0, 2.0], REFERENCE: [1.0, 1.0]}, index=pd.Index([0, 1], name="trial"))
    rewards = {"p'": torch.tensor([[0.5, 1.0], [0.25, 0.25]]), REFERENCE: torch.tensor([[0.0, 0.5], [0.5, 1.0]])}
    recall = pd.DataFrame({"p'": [-3.0, -2.0], REFERENCE: [-4.0, -4.0], "p''_4": [-9.0, -9.0]}, index=top.index)
    table = figure2_table(top, rewards, recall)
    assert list(table.index) == ["p'", REFERENCE]  # the models of `top`, not every model of `recall`
    assert table.loc["p'"].to_dict() == pytest.approx({
        "top-region samples mean": 3.0, "top-region samples std": 2 ** 0.5, "mean normalised reward": 0.5,
        "overall recall mean": -2.5, "overall recall std": 0.5 ** 0.5})
    assert table.loc[REFERENCE, "top-region samples std"] == 0 and table.loc[REFERENCE, "overall recall mean"] == -4
