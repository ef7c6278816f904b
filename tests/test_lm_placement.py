"""Every model of the LM testbed computes on the configured device in the configured precision.

Without a GPU the device is the CPU, so what these tests can tell apart is the precision: with bf16 on,
every forward pass of every model (p* of each kind, students, references, policies, p_target as the
oracle, value heads) must run under bf16 autocast — in sampling, scoring, KD training, alignment and
evaluation — and the placement record (`alignkd.lm.device.placement_record`) shows where each ran. A forward
pass left outside the autocast (as KD's held-out loss and every rollout were before) fails these tests.
"""

import dataclasses

import pytest
import torch

from alignkd.cache import ResultStore
from alignkd.lm.algorithms import ALGORITHMS, alignment_config
from alignkd.lm.config import LLMConfig, StageConfig
from alignkd.lm.device import Placement, autocast, placement_record
from alignkd.lm.experiments import cached_references, cached_run_pipelines
from alignkd.lm.groundtruth import MarkovMixtureConfig, markov_tokenizer
from alignkd.lm.kd import KDDataConfig, TrainConfig
from alignkd.lm.metrics import MetricConfig
from alignkd.lm.students import tiny_llama

BF16 = Placement.of("cpu", bf16=True)


def tiny_config(bf16: bool, **overrides) -> LLMConfig:
    train = TrainConfig(size="tiny", learning_rate=5e-3, batch_size=32, bf16=bf16)
    return LLMConfig(markov=MarkovMixtureConfig(vocab_size=12, n_topics=3),
                     high_recall=StageConfig(KDDataConfig(n_samples=120, max_new_tokens=5), train),
                     low_recall=StageConfig(KDDataConfig(n_samples=100, max_new_tokens=5, tau=0.95, tau_topic=0.7), train),
                     target=StageConfig(KDDataConfig(n_samples=100, max_new_tokens=5, tau=0.8), train),
                     n_fold_samples=40, n_recall_samples=40, metrics=MetricConfig(n_samples=40, max_new_tokens=5),
                     bf16=bf16, **overrides)


def alignments(bf16: bool) -> dict:
    shared = dict(n_iterations=1, batch_size=8, max_new_tokens=5, eval_every=1, device="cpu", bf16=bf16)
    extra = {"ppo": dict(mini_batch_size=4), "dpo_online": dict(grad_steps=1, pairs_per_step=2),
             "kto": dict(grad_steps=1, examples_per_step=4), "simpo": dict(grad_steps=1, pairs_per_step=2)}
    return {name: alignment_config(name, **shared, **extra.get(name, {})) for name in ALGORITHMS}


def run_everything(tmp_path, config: LLMConfig, bf16: bool):
    store = ResultStore("test", root=tmp_path)
    with placement_record() as record:
        refs = cached_references(store, config, progress=False)
        for name, alignment in alignments(bf16).items():
            cached_run_pipelines(store, refs, alignment, [0], label=name, progress=False)
    return refs, record


def test_autocast_is_bf16_on_the_cpu_when_asked():
    layer = torch.nn.Linear(4, 4)
    with autocast("cpu", True):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast("cpu", False):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_every_model_of_a_synthetic_language_pipeline_runs_on_the_device_under_bf16(tmp_path):
    refs, record = run_everything(tmp_path, tiny_config(bf16=True), bf16=True)
    assert record.problems(BF16) == []
    # p* (exact), students / references / policies (Llama) and PPO's value head all computed, on the CPU
    assert {"MarkovMixture", "LlamaForCausalLM", "ValueHead"} <= record.owners()
    for name, model in refs.models.items():
        assert model.placement == BF16, name
    assert all(p.dtype == torch.float32 for p in refs.models["p'"].model.parameters())  # master weights


def test_the_record_sees_forward_passes_outside_bf16(tmp_path):
    """The same run in float32 is flagged against a bf16 placement: the check above can fail."""
    _, record = run_everything(tmp_path, tiny_config(bf16=False), bf16=False)
    problems = record.problems(BF16)
    assert any(p.startswith("LlamaForCausalLM") for p in problems)
    assert any(p.startswith("ValueHead") for p in problems)
    assert record.problems(Placement.of("cpu", bf16=False)) == []


def test_a_real_lm_ground_truth_and_its_distilled_p_target_run_under_bf16(tmp_path):
    """`hf:<folder>`: p* a Llama from disk, p_target distilled (not exact), the oracle scoring with it."""
    folder = tmp_path / "p_star"
    tokenizer = markov_tokenizer(12)
    tiny_llama(12, seed=3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = dataclasses.replace(tiny_config(bf16=True), ground_truth=f"hf:{folder}", prompt="<bos>",
                                 low_recall=dataclasses.replace(tiny_config(True).low_recall,
                                                                data=KDDataConfig(n_samples=100, max_new_tokens=5,
                                                                                  tau=0.95)))
    store = ResultStore("test", root=tmp_path / "results")
    with placement_record() as record:
        refs = cached_references(store, config, progress=False)
        cached_run_pipelines(store, refs, alignments(True)["grpo_reward"], [0], label="grpo_reward", progress=False)
    assert record.problems(BF16) == []
    assert "MarkovMixture" not in record.owners() and "LlamaForCausalLM" in record.owners()
    assert refs.p_star.placement == BF16 and refs.models["p_target"].placement == BF16


def test_kd_stages_must_train_where_the_experiment_lives():
    config = tiny_config(bf16=False)
    stage = dataclasses.replace(config.high_recall, train=dataclasses.replace(config.high_recall.train, bf16=True))
    with pytest.raises(ValueError, match="KD stage trains on"):
        dataclasses.replace(config, high_recall=stage)
