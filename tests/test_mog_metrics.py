"""Figure 2's top-reward counts, by hand."""

import torch

from alignkd.mog.metrics import top_region_counts

REFERENCE = "p''_3 (β_KD=1.25)"


def test_top_region_counts_count_rewards_above_the_threshold():
    rewards = {"p'": torch.tensor([[0.95, 0.91, 0.2], [0.9, 0.99, 1.0]]),
               REFERENCE: torch.tensor([[0.1, 0.2, 0.3], [0.95, 0.5, 0.5]])}
    top = top_region_counts(rewards, 0.9, trials=[3, 7])
    assert top.index.name == "trial" and list(top.index) == [3, 7]
    assert top.loc[3, "p'"] == 2 and top.loc[7, "p'"] == 2  # 0.9 itself is not above 0.9
    assert list(top[REFERENCE]) == [0, 1]
