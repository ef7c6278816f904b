"""KD training on one device and across processes (SPEC §7): bf16 autocast on the CPU, 2 CPU processes (gloo,
DDP and DeepSpeed ZeRO-2) equal to 1 process with the same global batch, and the ZeRO-2 configs as DeepSpeed
and accelerate read them.

The multi-process runs go through the module's command line, as a user's would. Tolerances: the 2-process
gradient is the 1-process gradient summed in another order (per-process partial sums, an all-reduce, micro-
batches), a float32 rounding difference of ~1e-7 per step that Adam carries for 32 steps: the weights measured
2.3e-6 apart (max |Δw| / max |w| per tensor), so 1e-4 has a 40× margin; the bugs this guards against move
them by 0.15 (schedule stepped per process) to 0.8 (each process training alone on all the data).
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from alignkd.lm.device import Placement, placement_record
from alignkd.lm.groundtruth import markov_mixture, markov_tokenizer
from alignkd.lm.kd import (KDDataConfig, TrainConfig, deepspeed_batch_settings, generate_dataset, heldout_loss,
                           load_dataset, make_accelerator, parse_args, split_heldout, train_student)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# 1000 training + 100 held-out sequences, a global batch of 32: 32 optimiser steps, 10 % warmup, 20 % decay
TRAIN_ARGS = ["--learning-rate", "5e-3", "--epochs", "1", "--validation-size", "100", "--warmup", "0.1", "--quiet"]
# DeepSpeed on the CPU JIT-compiles a shared-memory all-reduce (C++, minutes on 2 cores) that only its inference
# path uses; ZeRO-2 talks through gloo. This launcher skips that build and records the engine DeepSpeed built.
DEEPSPEED_SHIM = """
import json, os, runpy
import deepspeed, deepspeed.ops
deepspeed.ops.__compatible_ops__ = {}  # no optional C++ op: nothing to compile
initialize = deepspeed.initialize

def recording_initialize(*args, **kwargs):
    engine, *rest = initialize(*args, **kwargs)
    if os.environ["RANK"] == "0":
        with open(os.environ["ZERO_RECORD"], "w") as f:
            json.dump({"stage": engine.zero_optimization_stage(), "world": engine.dp_world_size,
                       "train_batch_size": engine.train_batch_size(), "micro": engine.train_micro_batch_size_per_gpu(),
                       "accum": engine.gradient_accumulation_steps(), "clip": engine.gradient_clipping(),
                       "bf16": engine.bfloat16_enabled(), "optimizer": type(engine.optimizer).__name__}, f)
    return (engine, *rest)

deepspeed.initialize = recording_initialize
runpy.run_module("alignkd.lm.kd", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def kd_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_distributed")
    gt = markov_mixture(vocab_size=24, n_topics=4)
    generate_dataset(gt, KDDataConfig(n_samples=1100, max_new_tokens=12, shard_size=600, seed=0), root / "data",
                     progress=False)
    markov_tokenizer(24).save_pretrained(root / "tokenizer")
    return root


def environment(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # never inherit a launch
        env.pop(name, None)
    return {**env, **extra}


def start(launcher: list[str], root: Path, out: str, *args: str, env: dict | None = None):
    """Start `launcher DATA OUT --tokenizer TOK ...` (the module's command line); (process, OUT)."""
    command = [*launcher, str(root / "data"), str(root / out), "--tokenizer", str(root / "tokenizer"), *TRAIN_ARGS,
               *args]
    # a session of its own: a hung launch is killed with all its workers, and nothing else
    process = subprocess.Popen(command, cwd=ROOT, env=env or environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return process, root / out


def finish(run: tuple[subprocess.Popen, Path]) -> tuple[dict, pd.DataFrame]:
    process, out = run
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"{out.name} did not finish in 300 s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    from safetensors.torch import load_file

    return load_file(out / "model.safetensors"), pd.read_csv(out / "train_log.csv")


def relative_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(kd_inputs):
    """The same global batch of 32, three ways, run side by side: 1 process × micro-batch 32; 2 processes
    (torchrun, gloo DDP) × micro-batch 8 × 2 accumulation steps; 2 processes under DeepSpeed ZeRO-2 × 16."""
    port = 29_500 + os.getpid() % 1000
    started = {"one": start([sys.executable, "-m", "alignkd.lm.kd"], kd_inputs, "one", "--batch-size", "32"),
               "ddp": start([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(port),
                             "-m", "alignkd.lm.kd"], kd_inputs, "ddp", "--batch-size", "8", "--grad-accum", "2")}
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        pass
    else:
        shim = kd_inputs / "zero2_shim.py"
        shim.write_text(DEEPSPEED_SHIM)
        # the repository's own accelerate config (8 GPUs) with 2 processes; DS_ACCELERATOR=cpu: DeepSpeed on gloo
        launch = [str(BIN / "accelerate"), "launch", "--config_file", "configs/accelerate_zero2.yaml",
                  "--num_processes", "2", "--main_process_port", str(port + 1000), str(shim)]
        started["zero2"] = start(launch, kd_inputs, "zero2", "--batch-size", "16",
                                 env=environment(DS_ACCELERATOR="cpu", ZERO_RECORD=str(kd_inputs / "engine.json")))
    results = {}
    for name, run in started.items():  # a failed run fails its own test only
        try:
            results[name] = finish(run)
        except AssertionError as failure:
            results[name] = failure
    return results


def result(runs: dict, name: str) -> tuple[dict, pd.DataFrame]:
    if isinstance(runs[name], AssertionError):
        raise runs[name]
    return runs[name]


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(runs):
    (w1, log1), (w2, log2) = result(runs, "one"), result(runs, "ddp")
    assert len(log1) == len(log2) == 32  # 1000 sequences / 32 per step: the world size leaves the length alone
    # the schedule is stepped once per optimiser step: identical learning rates, warmup then stable then decay
    assert log1["lr"].tolist() == log2["lr"].tolist()
    assert log1["lr"].iloc[0] == pytest.approx(5e-3 * 2 / 3) and log1["lr"].iloc[-1] == 0.0
    assert list(log2["phase"]) == ["warmup"] * 3 + ["stable"] * 23 + ["decay"] * 6
    # the loss is the mean per response token of the global batch on both sides
    assert (log1["loss"] - log2["loss"]).abs().max() < 1e-5
    assert log1["loss"].iloc[-1] < log1["loss"].iloc[0] - 0.5  # it did learn
    assert relative_difference(w1, w2) < 1e-4
    eval1, eval2 = log1["eval_loss"].dropna(), log2["eval_loss"].dropna()
    assert len(eval1) == len(eval2) == 1 and abs(eval1.iloc[0] - eval2.iloc[0]) < 1e-3


def test_deepspeed_zero2_on_two_cpu_processes_equals_one_process(kd_inputs, runs):
    if "zero2" not in runs:
        pytest.skip("deepspeed is not installed")
    (w1, log1), (w3, log3) = result(runs, "one"), result(runs, "zero2")
    engine = json.loads((kd_inputs / "engine.json").read_text())
    assert engine == {"stage": 2, "world": 2, "train_batch_size": 32, "micro": 16, "accum": 1, "clip": 1.0,
                      "bf16": False, "optimizer": "DeepSpeedZeroOptimizer"}
    assert log3["lr"].tolist() == log1["lr"].tolist()
    assert (log1["loss"] - log3["loss"]).abs().max() < 1e-5
    assert relative_difference(w1, w3) < 1e-4
    assert abs(log1["eval_loss"].dropna().iloc[0] - log3["eval_loss"].dropna().iloc[0]) < 1e-3


def test_bf16_on_cpu_autocasts_every_training_and_heldout_forward(kd_inputs):
    torch.set_num_threads(1)
    data = load_dataset(kd_inputs / "data", pad_id=2, limit=300)
    config = TrainConfig(size="tiny", epochs=1, learning_rate=5e-3, batch_size=50, validation_size=100, eval_steps=2,
                         bf16=True)
    with placement_record() as record:
        model, log = train_student(data, config, vocab_size=24, bos_id=0, eos_id=1, pad_id=2, progress=False)
    assert record.problems(Placement.of("cpu", bf16=True)) == []
    # 4 training forwards (200 sequences / 50) and 2 held-out evaluations of one chunk each, all bf16
    assert dict(record.counts) == {("LlamaForCausalLM", "cpu", torch.bfloat16): 6}
    assert {p.dtype for p in model.parameters()} == {torch.float32} and not model.training
    assert next(model.parameters()).device.type == "cpu"
    _, heldout = split_heldout(data, 100)
    assert heldout_loss(model, heldout, bf16=True) == log["eval_loss"].min()  # the same autocast as training
    # autocast did change the numbers: the float32 run of the same recipe differs, slightly
    _, log32 = train_student(data, dataclasses.replace(config, bf16=False), vocab_size=24, bos_id=0,
                             eos_id=1, pad_id=2, progress=False)
    assert 0 < abs(log32["loss"].iloc[0] - log["loss"].iloc[0]) < 0.05


def test_gpu_device_without_a_gpu_fails_and_bf16_does_not():
    assert TrainConfig(bf16=True).bf16  # CPU autocast: no GPU needed
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="TrainConfig.device = 'cuda' needs a GPU"):
            TrainConfig(device="cuda")
    with pytest.raises(ValueError, match="TrainConfig.betas"):
        TrainConfig(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="TrainConfig.grad_clip"):
        TrainConfig(grad_clip=-1.0)


def test_a_launcher_precision_other_than_bf16_flag_fails_before_training(monkeypatch):
    # `accelerate launch --mixed_precision bf16` without --bf16 true would otherwise train in float32 silently
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ValueError, match="TrainConfig.bf16 = False: pass --bf16 true"):
        make_accelerator(TrainConfig())
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ValueError, match="fp16 is not supported"):
        make_accelerator(TrainConfig(bf16=True))


def test_command_line_sets_every_train_config_field():
    args, config = parse_args(["DATA", "OUT", "--tokenizer", "TOK", "--size", "small", "--epochs", "2.5",
                               "--batch-size", "8", "--grad-accum", "4", "--learning-rate", "1e-3", "--betas", "0.8",
                               "0.99", "--weight-decay", "0.1", "--warmup", "0.05", "--decay", "0.1",
                               "--grad-clip", "0",
                               "--validation-size", "10", "--eval-steps", "3", "--early-stopping-patience", "2",
                               "--early-stopping-threshold", "0.01", "--bf16", "true", "--device", "cpu",
                               "--max-positions", "64", "--seed", "7"])
    assert config == TrainConfig(size="small", epochs=2.5, batch_size=8, grad_accum=4, learning_rate=1e-3,
                                 betas=(0.8, 0.99), weight_decay=0.1, warmup=0.05, decay=0.1, grad_clip=0.0,
                                 validation_size=10, eval_steps=3, early_stopping_patience=2,
                                 early_stopping_threshold=0.01, bf16=True, device="cpu", max_positions=64, seed=7)
    assert (args.data, args.out, args.tokenizer) == (Path("DATA"), Path("OUT"), Path("TOK"))
    assert parse_args(["D", "O", "--tokenizer", "T"])[1] == TrainConfig()  # the defaults are TrainConfig's
    with pytest.raises(SystemExit):
        parse_args(["D", "O", "--tokenizer", "T", "--bf16", "maybe"])


def test_zero2_configs_parse_with_deepspeed_and_accelerate(monkeypatch):
    pytest.importorskip("deepspeed")
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    from deepspeed.runtime import config as deepspeed_config

    launch = load_config_from_file(str(ROOT / "configs/accelerate_zero2.yaml"))
    assert launch.distributed_type == DistributedType.DEEPSPEED and launch.num_processes == 8 and not launch.use_cpu
    zero2 = ROOT / launch.deepspeed_config["deepspeed_config_file"]
    train = TrainConfig(batch_size=8, grad_accum=2, grad_clip=0.5)
    for world in (1, 8):
        raw = json.loads(zero2.read_text())
        raw.update(deepspeed_batch_settings(train, world))
        assert "auto" not in json.dumps(raw)  # train_student leaves DeepSpeed nothing to guess
        mpu = None
        if world > 1:  # DeepSpeed reads the data-parallel world from its process group, or from an mpu
            monkeypatch.setattr(deepspeed_config.dist, "get_rank", lambda: 0)
            mpu = type("DataParallel", (), {"get_data_parallel_world_size": staticmethod(lambda: world)})()
        parsed = deepspeed_config.DeepSpeedConfig(raw, mpu=mpu)
        assert (parsed.world_size, parsed.train_batch_size, parsed.train_micro_batch_size_per_gpu,
                parsed.gradient_accumulation_steps) == (world, 16 * world, 8, 2)
        assert parsed.zero_optimization_stage == 2 and parsed.gradient_clipping == 0.5
        assert not parsed.bfloat16_config.enabled  # bf16 is our autocast, float32 weights in the engine
