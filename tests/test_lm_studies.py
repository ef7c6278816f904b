"""Chapter 06's studies: reward gaps at matched length and the 2 × 2 of K-A references, on a tiny run."""

import pandas as pd
import pytest
import torch

from alignkd.cache import ResultStore
from alignkd.lm.algorithms import alignment_config
from alignkd.lm.config import LLMConfig, StageConfig
from alignkd.lm.experiments import cached_align, cached_evaluated, cached_references, cached_run_pipelines
from alignkd.lm.groundtruth import MarkovMixtureConfig
from alignkd.lm.kd import KDDataConfig, TrainConfig
from alignkd.lm.metrics import MetricConfig
from alignkd.lm.studies import cached_capacity_grid, cached_length_gaps, gap_decomposition

TRAIN = TrainConfig(size="tiny", learning_rate=5e-3, batch_size=32)
CONFIG = LLMConfig(markov=MarkovMixtureConfig(vocab_size=12, n_topics=3, topic_markers=2),
                   high_recall=StageConfig(KDDataConfig(n_samples=300, max_new_tokens=6), TRAIN),
                   low_recall=StageConfig(KDDataConfig(n_samples=200, max_new_tokens=6, tau=0.95, tau_topic=0.5), TRAIN),
                   n_fold_samples=100, n_recall_samples=100, metrics=MetricConfig(n_samples=100, max_new_tokens=6))
PPO = alignment_config("ppo", n_iterations=2, batch_size=8, mini_batch_size=4, learning_rate=1e-3, max_new_tokens=6,
                       eval_every=1, device="cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    store = ResultStore("test", root=tmp_path_factory.mktemp("studies"))
    refs = cached_references(store, CONFIG, progress=False)
    return store, refs, cached_run_pipelines(store, refs, PPO, [0], progress=False).metrics


def test_length_gaps_read_the_pipelines_models(run):
    store, refs, metrics = run
    gaps = cached_length_gaps(store, refs, {"ppo": PPO}, [0], final_tau=0.95, n_samples=300, min_count=5)
    row = gaps.iloc[0]
    assert (row["algorithm"], row["seed"]) == ("ppo", 0)
    assert 1 <= row["mean_length_a"] <= 6 and 1 <= row["mean_length_b"] <= 6
    assert 0 < row["coverage_a"] <= 1 and abs(row["matched"]) < 10
    tables = lambda: list((store.root / "lm_length_gaps").glob("*.parquet"))  # noqa: E731
    assert len(tables()) == 1  # stored, as its name says
    tables()[0].unlink()  # a cached table is read back; this one is recomputed, to the same numbers
    again = cached_length_gaps(store, refs, {"ppo": PPO}, [0], final_tau=0.95, n_samples=300, min_count=5)
    pd.testing.assert_frame_equal(again, gaps)
    assert cached_length_gaps(store, refs, {"ppo": PPO}, [0], final_tau=0.95, n_samples=300, min_count=5).equals(gaps)


def test_capacity_grid_reuses_p_double_prime_and_its_k_a_run(run):
    store, refs, metrics = run
    grid = cached_capacity_grid(store, refs, PPO, [0], label="ppo", sizes=["tiny"], progress=False)
    assert list(zip(grid["tau_topic"], grid["stage"])) == [(0.5, "reference"), (0.5, "aligned"),
                                                           (1.0, "reference"), (1.0, "aligned")]
    # the pruned tiny cell is p'' itself, and its K-A run is the pipeline's: same metrics
    ka = metrics[metrics["model"] == "p''_KA"].iloc[0]
    cell = grid[(grid["tau_topic"] == 0.5) & (grid["stage"] == "aligned")].iloc[0]
    assert cell["reward"] == ka["reward"] and cell["overall_recall"] == ka["overall_recall"]
    reference = metrics[metrics["model"] == "p''"].iloc[0]
    assert grid.iloc[0]["reward"] == reference["reward"]
    assert cached_align(store, refs, "p''", PPO, 0, progress=False).path.exists()


def test_evaluations_are_cached_by_recipe(run):
    store, refs, metrics = run
    saved = lambda: len(list((store.root / "lm_evaluation").glob("*.parquet")))  # noqa: E731
    before = saved()
    row = cached_evaluated(store, refs, refs.recipes["p''"], refs.models["p''"])
    assert saved() == before  # cached_run_pipelines evaluated p'': read back
    assert row == refs.evaluate(refs.models["p''"]) and row["reward"] == metrics.set_index("model").loc["p''", "reward"]


def test_gap_decomposition_by_hand():
    grid = pd.DataFrame({"algorithm": "ppo", "stage": "aligned", "seed": [0, 1] * 4,
                         "size": ["small"] * 4 + ["tiny"] * 4, "tau_topic": [0.5, 0.5, 1.0, 1.0] * 2,
                         "reward": [2.0, 2.0, 3.0, 3.2, 1.0, 1.2, 1.5, 1.5]})
    metrics = pd.DataFrame({"algorithm": "ppo", "model": ["p''_KA", "p''_KA", "p''_AK", "p''_AK", "p''_AK"],
                            "final_tau": [float("nan")] * 2 + [0.95, 0.95, 0.9], "reward": [1.0, 1.2, 3.0, 3.4, 9.0]})
    parts = gap_decomposition(grid, metrics, high_size="small", low_size="tiny", tau_topic=0.5, final_tau=0.95)
    assert parts["gap"] == pytest.approx(3.2 - 1.1)
    assert parts["pruning"] == pytest.approx(1.5 - 1.1) and parts["size"] == pytest.approx(3.1 - 1.5)
    assert parts["rest"] == pytest.approx(2.1 - 0.4 - 1.6)


def test_coverage_sweep_measures_each_references_share_and_the_gap(run):
    from alignkd.lm.premise import PremiseRule, cached_premise_check
    from alignkd.lm.studies import cached_coverage_sweep, coverage_trend, sweep_intervals

    store, refs, metrics = run
    rule = PremiseRule(max_new_tokens=6)
    grid = cached_capacity_grid(store, refs, PPO, [0], label="ppo", sizes=["tiny"], progress=False)
    aligned_before = set((store.root / "lm_aligned").glob("*[!k]"))
    sweep = cached_coverage_sweep(store, CONFIG, {"ppo": PPO}, [0, 1], tau_topics=[0.5, 1.0], rule=rule, progress=False)
    assert list(sweep["tau_topic"]) == [0.5, 0.5, 1.0, 1.0]
    first = sweep.iloc[0]  # τ_topic 0.5 is the fixture's own config: its seed-0 run is cached_run_pipelines'
    by_model = metrics[metrics.seed == 0].set_index("model")
    assert first["ka_reward"] == by_model.loc["p''_KA", "reward"] and first["ak_reward"] == by_model.loc["p''_AK", "reward"]
    assert first["gap_reward"] == pytest.approx(by_model.loc["p''_AK", "reward"] - by_model.loc["p''_KA", "reward"])
    assert first["gap_target_share"] == pytest.approx(by_model.loc["p''_AK", "target_share"]
                                                     - by_model.loc["p''_KA", "target_share"])
    main = cached_premise_check(store, refs.models, refs.recipes, refs.p_star, refs.target_topic, rule)
    assert first["reference_target_share"] == main.share("p''")  # the main run's premise shares, read back
    shares = sweep.groupby("tau_topic")["reference_target_share"].first()
    assert shares[0.5] < shares[1.0]  # the sharpening prunes the target from p''
    assert (sweep["reference_target_share_low"] <= sweep["reference_target_share"]).all()
    assert (sweep["reference_target_share"] <= sweep["reference_target_share_high"]).all()
    table = sweep_intervals(sweep)
    assert list(table["n_seeds"]) == [2, 2]
    for column in ("gap_reward", "gap_target_share", "ak_target_share"):
        assert (table[f"{column}_low"] <= table[column]).all() and (table[column] <= table[f"{column}_high"]).all()
    assert table["gap_reward"].iloc[0] == pytest.approx(sweep["gap_reward"][:2].mean())
    # new alignments: seed 1's K-A at both τ_topic and its A-K (shared by both); seed 0's K-A at τ_topic 1 is
    # the 2 × 2's unpruned p''-sized cell, read back
    assert len(set((store.root / "lm_aligned").glob("*[!k]")) - aligned_before) == 3
    kept = grid[(grid["tau_topic"] == 1.0) & (grid["stage"] == "aligned")].iloc[0]
    assert kept["reward"] == sweep[(sweep.tau_topic == 1.0) & (sweep.seed == 0)]["ka_reward"].iloc[0]
    trend = coverage_trend(sweep).iloc[0]
    assert (trend["low_share"], trend["high_share"]) == (shares[0.5], shares[1.0])
    by_seed = sweep.pivot_table(index="seed", columns="tau_topic", values="gap_reward")
    assert trend["estimate"] == pytest.approx((by_seed[0.5] - by_seed[1.0]).mean())


def test_coverage_trend_by_hand():
    from alignkd.lm.studies import coverage_trend

    sweep = pd.DataFrame({"algorithm": "dpo_online", "seed": [0, 1, 2] * 3, "tau_topic": [1.0] * 3 + [0.7] * 3 + [0.5] * 3,
                          "reference_target_share": [0.04] * 3 + [0.02] * 3 + [0.005] * 3,
                          "gap_reward": [0.1, 0.2, 0.0, 0.3, 0.3, 0.3, 0.5, 0.7, 0.6]})
    row = coverage_trend(sweep).iloc[0]
    assert (row["low_share"], row["high_share"], row["n_seeds"]) == (0.005, 0.04, 3)
    assert row["estimate"] == pytest.approx(0.5)  # (0.4 + 0.5 + 0.6) / 3
    assert row["low"] <= 0.5 <= row["high"] and row["low"] > 0
