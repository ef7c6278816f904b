"""The LLM experiments layer: a tiny K-A / A-K run, its cache, a crash mid-alignment, chapter configs."""

import dataclasses

import pandas as pd
import pytest
import torch

from alignkd.cache import ResultStore, config_hash
from alignkd.lm import experiments
from alignkd.lm.algorithms import ALGORITHMS, alignment_config
from alignkd.chapters import call_with, ch06_llm, named, profile_values
from alignkd.lm.config import LLMConfig, StageConfig
from alignkd.lm.experiments import cached_align, cached_references, cached_run_pipelines
from alignkd.lm.groundtruth import MarkovMixtureConfig
from alignkd.lm.kd import KDDataConfig, TrainConfig
from alignkd.lm.metrics import MetricConfig
from alignkd.lm.ppo import train_ppo
from alignkd.lm.summary import summarise

TRAIN = TrainConfig(size="tiny", learning_rate=5e-3, batch_size=32)
CONFIG = LLMConfig(markov=MarkovMixtureConfig(vocab_size=12, n_topics=3),
                   high_recall=StageConfig(KDDataConfig(n_samples=300, max_new_tokens=6), TRAIN),
                   low_recall=StageConfig(KDDataConfig(n_samples=200, max_new_tokens=6, tau=0.95, tau_topic=0.7), TRAIN),
                   n_fold_samples=100, n_recall_samples=100, metrics=MetricConfig(n_samples=100, max_new_tokens=6))
PPO = alignment_config("ppo", n_iterations=2, batch_size=8, mini_batch_size=4, learning_rate=1e-3, max_new_tokens=6,
                       eval_every=1, device="cpu")


def test_tiny_pipeline_runs_and_a_rerun_is_read_from_the_cache(tmp_path):
    torch.set_num_threads(1)
    store = ResultStore("test", root=tmp_path)
    refs = cached_references(store, CONFIG, progress=False)
    result = cached_run_pipelines(store, refs, PPO, [0], progress=False)
    metrics, trajectories = result.metrics, result.trajectories
    assert list(metrics["model"]) == ["p*", "p'", "p''", "p_target", "p''_KA", "p'_AK", "p''_AK"]
    assert metrics[["overall_precision", "overall_recall", "target_precision", "reward"]].notna().all().all()
    assert set(trajectories["pipeline"]) == {"K-A", "A-K"} and (trajectories["iteration"].max() == 2)
    # the trajectories are those of the cached alignments (read once, no second run)
    ak = cached_align(store, refs, "p'", PPO, 0, progress=False)
    pd.testing.assert_frame_equal(trajectories[trajectories.pipeline == "A-K"].drop(columns=["algorithm", "seed",
                                  "pipeline"]).reset_index(drop=True), ak.trajectory)
    assert ak.selected_step in set(ak.trajectory.iteration)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    again = cached_run_pipelines(store, cached_references(store, CONFIG, progress=False), PPO, [0], progress=False)
    pd.testing.assert_frame_equal(metrics, again.metrics)
    pd.testing.assert_frame_equal(trajectories, again.trajectories)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing recomputed, nothing written
    # every model folder is named by the hash of its recipe
    assert (tmp_path / "lm_aligned" / config_hash(ak.recipe)) == ak.path
    table = summarise(metrics)
    assert set(table["model"]) == set(metrics["model"])
    # App. D: a second final-KD temperature reuses the aligned models and adds one p''_AK row per τ
    swept = cached_run_pipelines(store, refs, PPO, [0], final_taus=[0.95, 0.8], progress=False).metrics
    finals = swept[swept["model"] == "p''_AK"].set_index("final_tau")
    assert list(finals.index) == [0.95, 0.8]
    first = metrics[metrics["model"] == "p''_AK"].iloc[0]
    assert (finals.loc[0.95, "overall_precision"], finals.loc[0.95, "overall_recall"]) == (
        first["overall_precision"], first["overall_recall"])
    assert finals.loc[0.8, "overall_precision"] != finals.loc[0.95, "overall_precision"]
    with pytest.raises(ValueError, match="final_taus"):
        cached_run_pipelines(store, refs, PPO, [0], final_taus=[], progress=False)
    with pytest.raises(ValueError, match="allowed: ppo, dpo_online, grpo, grpo_reward"):
        alignment_config("sft")
    with pytest.raises(ValueError, match="tau_topic"):
        LLMConfig(ground_truth="gguf:smollm2")  # the default p'' stage sharpens topics: synthetic language only


class Interrupted(Exception):
    pass


def test_an_interrupted_alignment_reruns_to_the_numbers_of_an_uninterrupted_one(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    store = ResultStore("test", root=tmp_path / "crashed")
    refs = cached_references(store, CONFIG, progress=False)

    def train_until_step_1(policy, reference, oracle, config, *, seed, progress, on_eval):
        def on_eval_then_crash(step, model):
            path = on_eval(step, model)  # the checkpoint is on disk when the crash comes
            if step == 1:
                raise Interrupted
            return path
        return train_ppo(policy, reference, oracle, config, seed=seed, progress=progress, on_eval=on_eval_then_crash)

    with monkeypatch.context() as patch:
        patch.setitem(ALGORITHMS, "ppo", dataclasses.replace(ALGORITHMS["ppo"], train=train_until_step_1))
        with pytest.raises(Interrupted):
            cached_align(store, refs, "p''", PPO, 0, progress=False)
    partial = [p for p in (tmp_path / "crashed" / "lm_aligned").iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and any((partial[0] / "checkpoints").iterdir())  # what the crash left behind
    rerun = cached_align(store, refs, "p''", PPO, 0, progress=False)
    assert not partial[0].exists()

    clean_store = ResultStore("test", root=tmp_path / "clean")
    clean_refs = cached_references(clean_store, CONFIG, progress=False)
    clean = cached_align(clean_store, clean_refs, "p''", PPO, 0, progress=False)
    pd.testing.assert_frame_equal(rerun.trajectory, clean.trajectory)
    for a, b in zip(rerun.model.model.state_dict().values(), clean.model.model.state_dict().values()):
        assert torch.equal(a, b)
    assert refs.evaluate(rerun.model) == refs.evaluate(clean.model)


def test_chapter_07_builds_chapter_06s_configuration_from_the_same_profile():
    params = profile_values("06_llm", "quick")
    assert params["n_high"] == 1000 and params["kd_epochs"] == 6.0  # params/quick.yaml
    config = call_with(ch06_llm.config, params)
    assert config.high_recall.data.n_samples == params["n_high"] and config.low_recall.train.size == params["low_size"]
    assert config.markov == MarkovMixtureConfig(vocab_size=params["vocab_size"], n_topics=params["n_topics"],
                                                topic_markers=params["topic_markers"])
    assert config.final_taus == tuple(params["final_taus"]) and config.metrics.n_samples == params["n_eval"]
    # a changed chapter-06 parameter reaches every reader of the profile (nothing retyped elsewhere)
    changed = call_with(ch06_llm.config, {**params, "n_high": params["n_high"] + 1})
    assert changed.high_recall.data.n_samples == params["n_high"] + 1 and changed != config
    alignments = call_with(ch06_llm.alignments, params)
    assert list(alignments) == params["algorithms"]
    ppo = alignments["ppo"]
    assert (ppo.n_iterations, ppo.batch_size, ppo.beta) == (params["iterations"], params["batch_size"], params["beta"])
    smollm2 = ch06_llm.smollm2_config(named(ch06_llm.config, params), **named(ch06_llm.smollm2_config, params))
    assert smollm2.ground_truth == "gguf:smollm2" and smollm2.low_recall.data.n_samples == params["smollm2_samples"] // 2
    assert smollm2.low_recall.data.tau_topic == 1.0 and smollm2.metrics.max_new_tokens == params["smollm2_max_new_tokens"]
    with pytest.raises(ValueError, match="algorithm = 'sft'"):
        call_with(ch06_llm.alignments, {**params, "algorithms": ["sft"]})
    assert call_with(ch06_llm.alignments, {**params, "algorithms": ["grpo_reward"]})["grpo_reward"].kl_form == "reward"


def test_recipes_are_cache_keys_of_configs_only():
    source = experiments.GroundTruth.of(CONFIG)
    high = experiments.distilled(source, CONFIG.high_recall)
    low = experiments.distilled(high, CONFIG.low_recall)
    assert config_hash(low) == config_hash(experiments.distilled(experiments.distilled(source, CONFIG.high_recall),
                                                                 CONFIG.low_recall))
    # p'''s name changes with anything upstream of it, and only then
    other_high = dataclasses.replace(CONFIG.high_recall, data=dataclasses.replace(CONFIG.high_recall.data, n_samples=301))
    assert config_hash(experiments.distilled(experiments.distilled(source, other_high), CONFIG.low_recall)) != \
        config_hash(low)
    assert config_hash(experiments.GroundTruth.of(dataclasses.replace(CONFIG, final_taus=(0.9,)))) == config_hash(source)
