"""What chapter 06 costs under a profile, before it runs: FLOPs, tokens and predicted minutes per stage.

    table = chapter_cost(profile_values("06_llm", "gpu"))  # one row per (section, stage), then the total
    print(format_table(table, "gpu"))                    # what `python -m alignkd check --profile gpu` prints

How. `chapter_work` walks the chapter as `experiments`, `parallel` and `studies` build it and lists every pass
over a model it makes: `sample` (ancestral decoding), `score` (a forward pass without gradients) and `train`
(forward, backward and an optimiser step). Work that the result store would find cached is counted once: each
item is keyed by the recipe that names its result (`experiments.KDData`, `Student`, `Aligned`, ...), so p'' is
one model whether the main pipelines, the 2 × 2 or the coverage sweep ask for it.

FLOPs: 2·N per sampled token and per scored position, 6·N per trained position (N = the model's parameters, tied
embeddings once: the output projection is a matmul, the input lookup is free). Attention's 12·L·d·T per trained
token is left out of the FLOPs: at T ≤ 129 positions it is under 4 % of 6·N for every model on the SmolLM2
vocabulary (the GPU profiles); the time model counts attention apart (`call_features`).

Time. A pass is a number of calls (a decode step, a scored batch, an optimiser step); a call costs

    compute = matmul FLOPs / FLOP rate + logits · s_logit + activations · s_activation
              + attention scores · s_attention + optimiser parameters · s_parameter
    latency = layers · forward passes · s_layer + s_call

and its time is compute + latency on a CPU (one thread does both) and max(compute, latency) on a GPU (kernels
are launched asynchronously, so the host's launch latency hides behind compute and vice versa). Small models
on a GPU are latency-bound: a decode step of SmolLM2-135M is ~0.1 TFLOP at batch 512, under a millisecond of
an H200, but 30 layers of eager PyTorch take several milliseconds to launch. Sampling is therefore modelled as
max(FLOP time at the decode FLOP rate, decode steps × launch latency), i.e. the tokens/s of a latency-bound loop.

Where the numbers come from (each constant below says so):
- the CPU's coefficients are fitted (non-negative least squares on relative error) to `CPU_MEASUREMENTS`,
  measured on this project's 2-core machine with `benchmarks/lm_cpu_throughput.py`;
- the H200's bf16 matmul rate is measured (SPEC §7); the H100's is assumed equal (same GH100 compute die), its
  peak is NVIDIA's spec; training and decode efficiency, launch latency and bytes moved per element are
  *assumptions* until a recorded GPU run under `runs/gpu/` (`gpu_records`) replaces them per model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cache import REPO_ROOT, config_hash

# --------------------------------------------------------------------------- model shapes

SMOLLM2_VOCAB = 49152
"""The SmolLM2 tokenizer's vocabulary (HuggingFaceTB/SmolLM2-*/config.json: vocab_size)."""

SMOLLM2_1_7B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                    num_key_value_heads=32, tie_word_embeddings=True)
"""p* of the paper: HuggingFaceTB/SmolLM2-1.7B's released config.json (vocab_size 49152, tied embeddings)."""

PROMPT_POSITIONS = 1
"""Every sample starts from one position: <bos> on the synthetic language, "The" (one SmolLM2 token) on real LMs."""

ACTIVATIONS_PER_LAYER = (24, 3)
"""Elementwise outputs per token per layer of an eager Llama layer, as (per hidden unit, per intermediate unit):
two RMSNorms (~6 ops each), rotary embedding of q and k (~10), two residual adds on the hidden width; SiLU, the
gate product and a cast on the intermediate width. A count of HF's LlamaDecoderLayer ops, not a measurement: the
CPU fit absorbs its scale, the GPU assumption multiplies it by bytes moved."""


@dataclass(frozen=True)
class ModelShape:
    """What the cost of a pass depends on: parameters, layers, widths, heads, vocabulary (`exact`: the
    synthetic language's Markov mixture, table look-ups and no network)."""

    name: str
    n_params: int
    n_layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    exact: bool = False

    def __post_init__(self):
        if self.vocab < 2 or min(self.n_params, self.n_layers, self.hidden, self.intermediate, self.heads) < 0:
            raise ValueError(f"ModelShape {self.name}: counts must be >= 0 and vocab >= 2 (got {self})")

    @property
    def activations_per_token(self) -> int:
        per_hidden, per_intermediate = ACTIVATIONS_PER_LAYER
        return self.n_layers * (per_hidden * self.hidden + per_intermediate * self.intermediate)


def _llama_shape(name: str, config) -> ModelShape:
    """Count a Llama's parameters on the meta device: no memory, no initialisation."""
    import torch
    from transformers import LlamaForCausalLM

    from ..lm.students import count_parameters

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return ModelShape(name, count_parameters(model), config.num_hidden_layers, config.hidden_size,
                      config.intermediate_size, config.num_attention_heads, config.vocab_size)


@functools.lru_cache(maxsize=None)
def student_shape(size: str, vocab: int) -> ModelShape:
    """A student of `alignkd.lm.students.STUDENT_SIZES` on a `vocab`-token vocabulary."""
    from ..lm.students import student_config

    return _llama_shape(size, student_config(size, vocab, bos_id=0, eos_id=1, pad_id=1))


@functools.lru_cache(maxsize=None)
def smollm2_1_7b_shape() -> ModelShape:
    from transformers import LlamaConfig

    return _llama_shape("smollm2-1.7b", LlamaConfig(vocab_size=SMOLLM2_VOCAB, **SMOLLM2_1_7B))


def ground_truth_shape(ground_truth: str, vocab_size: int, n_topics: int) -> ModelShape:
    """p*: the Markov mixture, the offline SmolLM2-135M-Instruct (GGUF, de-quantised: SmolLM2-135M's architecture)
    or a hub / local SmolLM2 (`hf:`; the 1.7B, 360M and 135M are known by name)."""
    if ground_truth == "markov_mixture":
        return ModelShape("markov_mixture", 0, 0, 0, 0, n_topics, vocab_size, exact=True)
    if ground_truth == "gguf:smollm2":  # named by its architecture: a GPU record of smollm2-135m applies to it
        return student_shape("smollm2-135m", SMOLLM2_VOCAB)
    name = ground_truth.removeprefix("hf:").lower()
    for known, shape in (("smollm2-1.7b", smollm2_1_7b_shape), ("smollm2-360m", lambda: student_shape(
            "smollm2-360m", SMOLLM2_VOCAB)), ("smollm2-135m", lambda: student_shape("smollm2-135m", SMOLLM2_VOCAB))):
        if known in name:
            return shape()
    raise ValueError(f"ground_truth = '{ground_truth}': the cost model knows markov_mixture, gguf:smollm2 and the "
                     f"SmolLM2 1.7B / 360M / 135M by name")


# --------------------------------------------------------------------------- work: the passes a chapter makes

KINDS = ("sample", "score", "train")
FEATURES = ("matmul_flops", "decode_flops", "logits", "sampled_logits", "activations", "attention",
            "optimizer_params", "layer_passes", "calls")
"""What a call does, as `call_features` counts it; the first seven are compute, the last two launch latency."""
LATENCY_FEATURES = ("layer_passes", "calls")
TRAIN_PASSES = 3
"""A training step is a forward and a backward of about twice its work (the 6·N rule's 3 × 2·N)."""


@dataclass(frozen=True)
class Work:
    """One pass over a model: `sequences` sequences, `length` new tokens each (`sample`) or `length` positions each
    (`score`, `train`), `batch` sequences per call, `epochs` passes over them (`train`). `cells` > 1: built inside
    `experiments.cached_cells` among that many independent cells, which several CPU processes share."""

    section: str
    stage: str
    model: ModelShape
    kind: str
    sequences: int
    length: int
    batch: int
    epochs: float = 1.0
    cells: int = 1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Work.kind = '{self.kind}' (allowed: {', '.join(KINDS)})")
        if self.sequences < 0 or self.length < 1 or self.batch < 1 or self.epochs <= 0 or self.cells < 1:
            raise ValueError(f"Work: sequences >= 0, length, batch, cells >= 1 and epochs > 0 (got {self})")

    @property
    def batches(self) -> int:
        return math.ceil(self.sequences / self.batch)

    @property
    def rows(self) -> float:
        """Sequences per call, on average (the last batch may be short)."""
        return self.sequences / self.batches if self.batches else 0.0

    @property
    def calls(self) -> float:
        if self.kind == "sample":
            return self.batches * self.length  # one decode step per token (the prefill is one of them)
        return self.batches * (self.epochs if self.kind == "train" else 1)

    @property
    def tokens(self) -> float:
        """Sampled tokens (`sample`: padding included, the batched loop runs to the longest response) or positions
        through the model (`score`, `train`: every epoch)."""
        return self.sequences * self.length * (self.epochs if self.kind == "train" else 1)

    @property
    def flops(self) -> float:
        return (6 if self.kind == "train" else 2) * self.model.n_params * self.tokens


def call_features(model: ModelShape, kind: str, rows: float, length: int) -> dict[str, float]:
    """The counts of one call (`FEATURES`): a decode step of `rows` sequences at a context of `length` tokens
    (`sample`), or a batch of `rows` sequences of `length` positions (`score`, `train`)."""
    if kind == "sample":
        tokens, context, passes = rows, length / 2, 1  # mean context of a step over the response
    else:
        tokens, context, passes = rows * length, length / 2, TRAIN_PASSES if kind == "train" else 1
    matmul = 2 * model.n_params * tokens * passes
    return {"matmul_flops": 0.0 if kind == "sample" else matmul, "decode_flops": matmul if kind == "sample" else 0.0,
            "logits": 0.0 if kind == "sample" else tokens * model.vocab * passes,
            "sampled_logits": tokens * model.vocab if kind == "sample" else 0.0,
            "activations": tokens * model.activations_per_token * passes,
            "attention": tokens * context * model.heads * model.n_layers * passes,
            "optimizer_params": float(model.n_params) if kind == "train" else 0.0,
            "layer_passes": float(model.n_layers * passes), "calls": 1.0}


# --------------------------------------------------------------------------- machines


@dataclass(frozen=True)
class Machine:
    """Seconds per unit of each of `FEATURES` (`seconds`), how compute and launch latency combine (`overlap`: max,
    else sum), how many cells run at once (`jobs`) and over how many devices KD training is data-parallel.

    `exact_tokens_per_s`: the synthetic language's sampling and scoring rates (`sample`, `score`), which no
    network shape describes (empty: a call of it costs the launch latency `seconds["calls"]`); `latency_floor`:
    measured (call size, seconds) pairs per (model name, kind), sorted by size, replacing the latency model for
    that model (a GPU record's, `GPURates.steps`); `matmul_rate`: the training FLOP rate per model name (a
    record's MFU)."""

    name: str
    seconds: Mapping[str, float]
    overlap: bool
    jobs: int = 1
    kd_devices: int = 1
    exact_tokens_per_s: Mapping[str, float] = field(default_factory=dict)
    latency_floor: Mapping[tuple[str, str], tuple[tuple[float, float], ...]] = field(default_factory=dict)
    matmul_rate: Mapping[str, float] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        unknown = set(self.seconds) ^ set(FEATURES)
        if unknown:
            raise ValueError(f"Machine {self.name}: seconds must name exactly {FEATURES} "
                             f"(differs in {sorted(unknown)})")
        if any(v < 0 for v in self.seconds.values()) or self.jobs < 1 or self.kd_devices < 1:
            raise ValueError(f"Machine {self.name}: seconds >= 0, jobs >= 1, kd_devices >= 1")

    def call_seconds(self, model: ModelShape, kind: str, rows: float, length: int) -> float:
        if model.exact:  # the Markov mixture's tables are tiny: a measured rate per token, or launch latency per call
            if not self.exact_tokens_per_s:
                return self.seconds["calls"]
            tokens = rows if kind == "sample" else rows * length
            return tokens / self.exact_tokens_per_s["sample" if kind == "sample" else "score"]
        counts = call_features(model, kind, rows, length)
        seconds = dict(self.seconds)
        if model.name in self.matmul_rate:
            seconds["matmul_flops"] = 1 / self.matmul_rate[model.name]
        compute = sum(counts[f] * seconds[f] for f in FEATURES if f not in LATENCY_FEATURES)
        latency = sum(counts[f] * seconds[f] for f in LATENCY_FEATURES)
        if (model.name, kind) in self.latency_floor:  # measured: the step of the largest size not above this call's
            size = rows if kind == "sample" else rows * length
            points = self.latency_floor[model.name, kind]
            below = [seconds for at, seconds in points if at <= size]
            latency = max(below) if below else points[0][1] * (size / points[0][0] if kind == "train" else 1.0)
        return max(compute, latency) if self.overlap else compute + latency

    def work_seconds(self, work: Work) -> float:
        """Wall seconds of one pass: its calls, shared among `jobs` processes when it is built in cells, KD
        training over `kd_devices` (data-parallel: each device takes 1/kd_devices of the optimiser steps' rows)."""
        if not work.sequences:
            return 0.0
        seconds = work.calls * self.call_seconds(work.model, work.kind, work.rows, work.length)
        if work.kind == "train" and work.stage == "KD training":
            seconds /= self.kd_devices
        return seconds / min(self.jobs, work.cells)


@dataclass(frozen=True)
class Measurement:
    """One timed pass of `benchmarks/lm_cpu_throughput.py`: `tokens_per_s` of `kind` on `model` (a student size,
    `smollm2-135m gguf` or `markov_mixture`) with a `vocab`-token vocabulary, `batch` sequences of `length`
    tokens per call."""

    model: str
    vocab: int
    kind: str
    batch: int
    length: int
    tokens_per_s: float

    @property
    def seconds_per_call(self) -> float:
        tokens = self.batch if self.kind == "sample" else self.batch * self.length
        return tokens / self.tokens_per_s

    @property
    def shape(self) -> ModelShape:
        if self.model == "markov_mixture":
            return ModelShape("markov_mixture", 0, 0, 0, 0, 8, self.vocab, exact=True)
        if self.model == "smollm2-135m gguf":
            return ground_truth_shape("gguf:smollm2", self.vocab, 0)
        return student_shape(self.model, self.vocab)


# Measured with `OMP_NUM_THREADS=1 python benchmarks/lm_cpu_throughput.py` on 2026-12-03, on this project's machine:
# 2 cores of an Intel Xeon @ 2.80 GHz, torch 2.13.0+cpu, transformers 5.23, one thread per process. Other processes
# shared the cores (load average 1.2–5), so each row is the faster of two runs (09:35 and 10:00 UTC): contention only
# slows a pass down, and the first run was about twice as slow as the second throughout.
CPU_MEASUREMENTS: tuple[Measurement, ...] = (
    Measurement('tiny', 64, 'sample', 512, 24, 88698.7),
    Measurement('tiny', 64, 'sample', 64, 24, 27799.7),
    Measurement('tiny', 64, 'score', 512, 25, 248735.0),
    Measurement('tiny', 64, 'train', 64, 25, 86050.2),
    Measurement('tiny', 64, 'train', 8, 25, 22789.1),
    Measurement('small', 64, 'sample', 512, 24, 36643.3),
    Measurement('small', 64, 'sample', 64, 24, 13161.0),
    Measurement('small', 64, 'score', 512, 25, 105978.7),
    Measurement('small', 64, 'train', 64, 25, 37071.9),
    Measurement('small', 64, 'train', 8, 25, 15683.2),
    Measurement('medium', 64, 'sample', 512, 24, 29753.2),
    Measurement('medium', 64, 'sample', 64, 24, 12559.3),
    Measurement('medium', 64, 'score', 512, 25, 48191.5),
    Measurement('medium', 64, 'train', 64, 25, 18478.2),
    Measurement('medium', 64, 'train', 8, 25, 10153.4),
    Measurement('tiny', 49152, 'sample', 512, 4, 453.6),
    Measurement('tiny', 49152, 'sample', 64, 8, 499.1),
    Measurement('tiny', 49152, 'score', 256, 9, 2450.0),
    Measurement('tiny', 49152, 'train', 16, 5, 608.0),
    Measurement('tiny', 49152, 'train', 64, 25, 626.3),
    Measurement('small', 49152, 'sample', 512, 4, 440.1),
    Measurement('small', 49152, 'sample', 64, 8, 463.3),
    Measurement('small', 49152, 'score', 256, 9, 2348.9),
    Measurement('small', 49152, 'train', 16, 5, 507.1),
    Measurement('small', 49152, 'train', 64, 25, 601.3),
    Measurement('10m', 49152, 'sample', 512, 4, 380.1),
    Measurement('10m', 49152, 'sample', 64, 8, 407.5),
    Measurement('10m', 49152, 'score', 256, 9, 1522.3),
    Measurement('10m', 49152, 'train', 16, 5, 246.0),
    Measurement('10m', 49152, 'train', 64, 25, 416.2),
    Measurement('30m', 49152, 'sample', 512, 4, 354.2),
    Measurement('30m', 49152, 'sample', 64, 8, 360.7),
    Measurement('30m', 49152, 'score', 256, 9, 1090.0),
    Measurement('30m', 49152, 'train', 16, 5, 124.0),
    Measurement('30m', 49152, 'train', 64, 25, 302.0),
    Measurement('smollm2-135m', 49152, 'train', 8, 25, 70.2),
    Measurement('smollm2-135m gguf', 49152, 'sample', 64, 4, 202.0),
    Measurement('smollm2-135m gguf', 49152, 'sample', 16, 8, 93.7),
    Measurement('smollm2-135m gguf', 49152, 'score', 64, 9, 358.0),
    Measurement('markov_mixture', 64, 'sample', 512, 24, 234927.8),
    Measurement('markov_mixture', 64, 'score', 1000, 25, 11620696.3),
)
CPU_CORES = 2
"""This project's CPU machine: chapter 06 builds its cells in one process per core (`workers = 0`)."""


def fit_cpu_seconds(measurements: Sequence[Measurement]) -> dict[str, float]:
    """Seconds per unit of each network feature, fitted to `measurements` (the CPU does compute and launches in one
    thread, so a call's time is their sum: a linear model). Non-negative least squares on relative error, so the
    millisecond passes of the tiny students weigh as much as the seconds of SmolLM2-135M."""
    from scipy.optimize import nnls

    rows = [m for m in measurements if m.model != "markov_mixture"]
    if not rows:
        raise ValueError("fit_cpu_seconds: no network measurements")
    counts = np.array([[call_features(m.shape, m.kind, m.batch, m.length)[f] for f in FEATURES] for m in rows])
    seconds = np.array([m.seconds_per_call for m in rows])
    scale = counts.max(0)
    scale[scale == 0] = 1.0  # a feature no measurement exercises gets coefficient 0
    solution, _ = nnls(counts / scale / seconds[:, None], np.ones(len(rows)))
    return dict(zip(FEATURES, (solution / scale).tolist()))


def exact_rates(measurements: Sequence[Measurement]) -> dict[str, float]:
    """The Markov mixture's measured tokens/s by kind (sampling: per sampled token; scoring: per position)."""
    rates = {m.kind: m.tokens_per_s for m in measurements if m.model == "markov_mixture"}
    if set(rates) != {"sample", "score"}:
        raise ValueError("CPU_MEASUREMENTS need a markov_mixture `sample` and `score` row")
    return rates


def cpu_machine(measurements: Sequence[Measurement] | None = None, jobs: int = CPU_CORES) -> Machine:
    """The 2-core CPU, one thread per process, from measured throughputs (`CPU_MEASUREMENTS`)."""
    measurements = CPU_MEASUREMENTS if measurements is None else measurements
    return Machine(f"CPU ({CPU_CORES} cores)", fit_cpu_seconds(measurements), overlap=False, jobs=jobs,
                   exact_tokens_per_s=exact_rates(measurements),
                   source="fitted to CPU_MEASUREMENTS (benchmarks/lm_cpu_throughput.py, 2026-12-03)")


def measurement_seconds(machine: Machine, m: Measurement) -> float:
    """What `machine` predicts for one measured call (the benchmark's --check compares it with the measurement)."""
    return machine.call_seconds(m.shape, m.kind, m.batch, m.length)


# GPUs. Measured: the H200's bf16 matmul rate. Spec: peaks and memory bandwidths (NVIDIA datasheets). Everything
# else is an assumption, named ASSUMED_*, until a record of a GPU run (`runs/gpu/`) replaces it.
H200_MATMUL_MEASURED = 790e12
"""bf16 matmul FLOP/s measured on the target H200 machine (SPEC §7)."""
H100_BF16_PEAK_SPEC = 989e12
"""Dense bf16 tensor-core peak of the H100 SXM and the H200 (NVIDIA datasheets); MFU is relative to it."""
H100_MATMUL_ASSUMED = H200_MATMUL_MEASURED
"""The H100 runs matmuls at the H200's measured rate: same GH100 compute die and clocks, the H200 differs in memory."""
H200_BANDWIDTH_SPEC = 4.8e12
H100_BANDWIDTH_SPEC = 3.35e12
"""HBM bytes/s (NVIDIA datasheets: H200 141 GB HBM3e, H100 SXM 80 GB HBM3)."""
ASSUMED_TRAIN_EFFICIENCY = 0.45
"""Fraction of the measured matmul rate that training and scoring passes reach when not latency-bound: 36 % MFU,
the goal `benchmarks/lm_throughput.py` sets at 360M (issue 4), not a measurement."""
ASSUMED_DECODE_EFFICIENCY = 0.2
"""Fraction of the matmul rate a decode step's matmuls reach (at most a few thousand rows: memory-bound at 64)."""
ASSUMED_LAYER_SECONDS = 0.25e-3
"""Host latency per Llama layer per forward pass in eager PyTorch: ~40 ops (ACTIVATIONS_PER_LAYER's plus 7
matmuls and attention) at ~6 µs of dispatch and launch each."""
ASSUMED_CALL_SECONDS = 1e-3
"""Host latency per call beyond the layers: embedding, final norm, head, softmax and multinomial, the host sync of
`generation.sample`'s `alive.any()`, the optimiser's foreach launches, Python."""
ASSUMED_BYTES = {"logits": 24, "sampled_logits": 24, "activations": 8, "attention": 256, "optimizer_params": 28}
"""HBM bytes per element: a logit is written in bf16, cast to float32, read by (log-)softmax and written, read by
the sampler or gather (~24); an eager elementwise output is written and read once in mixed bf16 / float32 (~8);
attention reads a key and a value of head size 64 in bf16 per (query, position, head, layer) — the KV cache in
decoding; fused SDPA never writes the scores (256); AdamW reads parameter, gradient and two moments and writes
three, in float32 (28)."""


def gpu_machine(name: str, matmul_rate: float, bandwidth: float, *, kd_devices: int = 1, source: str = "") -> Machine:
    """A GPU from its matmul rate and bandwidth and the ASSUMED_* constants. One process per GPU (`workers: 1`):
    cells run one after another, only KD training spreads over `kd_devices`."""
    seconds = {"matmul_flops": 1 / (ASSUMED_TRAIN_EFFICIENCY * matmul_rate),
               "decode_flops": 1 / (ASSUMED_DECODE_EFFICIENCY * matmul_rate),
               "layer_passes": ASSUMED_LAYER_SECONDS, "calls": ASSUMED_CALL_SECONDS,
               **{feature: size / bandwidth for feature, size in ASSUMED_BYTES.items()}}
    return Machine(name, seconds, overlap=True, jobs=1, kd_devices=kd_devices,
                   source=f"{source}; efficiencies, launch latency and bytes per element assumed (ASSUMED_* in "
                          f"alignkd/chapters/ch06_cost.py): no GPU run recorded under runs/gpu/")


# --------------------------------------------------------------------------- a recorded GPU run

GPU_RECORDS = REPO_ROOT / "runs" / "gpu"
RECORD_KEYS = ("train_tokens_per_s", "train_batch_tokens", "sample_tokens_per_s", "sample_batch", "mfu")
RECORD_KINDS = ("sample", "train")


@dataclass(frozen=True)
class GPURates:
    """What a GPU run measured, per model name: a student size (`smollm2-135m` is also the GGUF p*) or
    `smollm2-1.7b`. Read from either file a run writes (`gpu_records`):

    - a JSON file `runs/gpu/<name>.json` (`benchmarks/lm_throughput.py --record`): {"device": "NVIDIA H200",
      "date": ..., "commit": ..., "command": ..., "throughput": {model: {key: value}}}, keys among `RECORD_KEYS`:
      `sample_tokens_per_s` at `sample_batch` sequences, `train_tokens_per_s` at `train_batch_tokens` positions per
      optimiser step, `mfu` (training FLOP/s over the 989 TFLOP/s bf16 peak);
    - a run folder `runs/gpu/<run>/` of `benchmarks/gpu_smoke.py` (`alignkd.lm.gpu_record`; its throughput rows:
      kind matmul / train / sample, size, batch, tokens_per_row, tokens_per_s, tflops).

    `steps[model, kind]`: (rows per decode step or positions per optimiser step, measured seconds) pairs, the
    floor of a call of that size or larger (a bigger call is never faster). Below the smallest measured size a
    decode step keeps that floor (it is launch-bound: the 2026-12-04 H200 took 26 ms a step at 64 rows, 24 ms at
    512), while a training step shrinks in proportion to its positions: that H200 took 104 ms for 8,192 positions
    of a 10m and 106 ms of a 30m student, so the step is not arithmetic, and the chapter's references (steps of
    ~2,100 positions) ran in 56 s, as the proportional rule predicts (53 s; `against_record`). `mfu[model]`: the
    training FLOP rate as a fraction of the spec peak; `matmul_tflops`: the run's own bf16 matmul ceiling."""

    device: str
    steps: Mapping[tuple[str, str], tuple[tuple[float, float], ...]]
    mfu: Mapping[str, float] = field(default_factory=dict)
    matmul_tflops: float | None = None
    date: str = ""
    commit: str = ""
    path: str = ""

    def __post_init__(self):
        for (model, kind), points in self.steps.items():
            if kind not in RECORD_KINDS or not points or any(size <= 0 or seconds <= 0 for size, seconds in points):
                raise ValueError(f"GPU record {self.path}: {model} {kind}: kinds {RECORD_KINDS}, sizes and seconds > 0")
        if any(not 0 < value <= 1 for value in self.mfu.values()) or (self.matmul_tflops or 1) <= 0:
            raise ValueError(f"GPU record {self.path}: mfu in (0, 1], matmul_tflops > 0")

    def applied(self, machine: Machine) -> Machine:
        """`machine` with this record's measured step times and FLOP rates in place of the assumptions."""
        seconds = dict(machine.seconds)
        if self.matmul_tflops:  # the efficiencies stay assumed, now of the measured ceiling
            ceiling = 1 / (ASSUMED_TRAIN_EFFICIENCY * seconds["matmul_flops"])
            for feature in ("matmul_flops", "decode_flops"):
                seconds[feature] *= ceiling / (self.matmul_tflops * 1e12)
        rates = {**machine.matmul_rate, **{m: value * H100_BF16_PEAK_SPEC for m, value in self.mfu.items()}}
        return dataclasses.replace(machine, seconds=seconds, latency_floor={**machine.latency_floor, **self.steps},
                                   matmul_rate=rates,
                                   source=f"record {self.path} ({self.device}, {self.date}, commit {self.commit})")


def load_gpu_record(path: Path) -> GPURates:
    """A record file of `benchmarks/lm_throughput.py --record`."""
    data = json.loads(Path(path).read_text())
    steps, mfu = {}, {}
    for model, values in data.get("throughput", {}).items():
        unknown = set(values) - set(RECORD_KEYS)
        if unknown:
            raise ValueError(f"GPU record {path}: {model} has unknown keys {sorted(unknown)} "
                             f"(allowed: {', '.join(RECORD_KEYS)})")
        for kind, rate, size in (("sample", "sample_tokens_per_s", "sample_batch"),
                                 ("train", "train_tokens_per_s", "train_batch_tokens")):
            if (rate in values) != (size in values):
                raise ValueError(f"GPU record {path}: {model} gives {rate} and {size} together or neither")
            if rate in values:
                steps[model, kind] = ((values[size], values[size] / values[rate]),)
        if "mfu" in values:
            mfu[model] = values["mfu"]
    return GPURates(data["device"], steps, mfu, None, str(data.get("date", "")), str(data.get("commit", "")),
                     str(path))


def rates_of_run(record) -> GPURates | None:
    """The throughput rows of a `benchmarks/gpu_smoke.py` run (an `alignkd.lm.gpu_record.GPURecord`) as rates;
    None for a CPU rehearsal or a run that measured none."""
    env, rows = record.env, record.throughput
    if env.get("requested_device") != "cuda" or env.get("tiny") or rows is None or rows.empty:
        return None
    steps: dict[tuple[str, str], list] = {}
    mfu, ceiling = {}, None
    for row in rows.itertuples():
        if row.kind == "matmul":
            ceiling = float(row.tflops)
        elif row.kind in RECORD_KINDS:
            per_call = int(row.batch) * (1 if row.kind == "sample" else int(row.tokens_per_row))
            steps.setdefault((row.size, row.kind), []).append((per_call, per_call / float(row.tokens_per_s)))
            if row.kind == "train":
                mfu[row.size] = float(row.tflops) * 1e12 / H100_BF16_PEAK_SPEC
    return GPURates(str(env.get("device_name", "")), {key: tuple(sorted(points)) for key, points in steps.items()},
                    mfu, ceiling, record.date, record.commit, str(record.path))


def gpu_records(folder: Path = GPU_RECORDS) -> list[GPURates]:
    """The rates of every GPU record under `runs/gpu/` (files of `load_gpu_record`, run folders of
    `alignkd.lm.gpu_record`), oldest first."""
    from ..lm.gpu_record import records

    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [load_gpu_record(p) for p in sorted(folder.glob("*.json"))]
    found += [rates_of_run(record) for record in records(folder)]
    return sorted((r for r in found if r is not None and r.steps), key=lambda r: r.date)


MACHINE_LABELS = {"cpu": "CPU 2 cores", "h200": "1 × H200", "h100x8": "8 × H100"}


def machines(*, workers: int = 0, records: Sequence[GPURates] | None = None) -> dict[str, Machine]:
    """The three machines the cost table predicts for. `workers`: chapter 06's parameter (0: one process per core).
    The newest record of an H200 replaces the assumptions of the H200 and, until an H100 is recorded, the H100s'."""
    records = gpu_records() if records is None else records
    found = {"h200": gpu_machine("1 × H200", H200_MATMUL_MEASURED, H200_BANDWIDTH_SPEC,
                                 source="bf16 matmul measured (790 TFLOP/s, SPEC §7), bandwidth spec"),
             "h100x8": gpu_machine("8 × H100", H100_MATMUL_ASSUMED, H100_BANDWIDTH_SPEC, kd_devices=8,
                                   source="matmul rate the H200's (same die), bandwidth spec, KD training "
                                          "data-parallel over 8, the rest on one")}
    # oldest first, so the newest wins; an H200's record stands for the H100s too until one of theirs exists: the
    # same die, and the record's step times are the host's and the software's more than the memory's
    for record in sorted(records, key=lambda r: "H100" in r.device):
        for key, devices in (("h200", ("H200",)), ("h100x8", ("H200", "H100"))):
            if any(device in record.device for device in devices):
                found[key] = record.applied(found[key])
    return {"cpu": cpu_machine(jobs=min(workers or CPU_CORES, CPU_CORES)), **found}


# --------------------------------------------------------------------------- the chapter's work

EARLY_STOP_EPOCHS = 8.0
"""Epochs after which early stopping ends the stable phase: chapter 06's default build stops p' after about 8
and p'' after about 7 (the notebook's premise section). With `kd_patience` > 0 a student trains
min(kd_epochs, this) epochs and then a decay phase of decay / (1 − decay) of them (`kd.train_student`)."""
SCORE_BATCH = 256
"""Sequences per scoring call (`HFLanguageModel.log_prob`, `sample`'s default batch; `heldout_loss` takes 512)."""
LENGTH_SAMPLES = 2000
"""Samples per model of the length study (`studies.cached_length_gaps`' `n_samples`)."""


CHAPTER = "06_llm"


def _cpu_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters with the machine fields at the CPU's: the configs check the machine they are built on, and
    the work does not depend on where it runs."""
    return {**params, "device": "cpu", "bf16": False}


class _Plan:
    """Collects the chapter's work, each result once (keyed as the result store keys it)."""

    def __init__(self, params: Mapping[str, Any]):
        from . import call_with, ch06_llm

        self.params = _cpu_params(params)
        self.config = call_with(ch06_llm.config, self.params)
        self.alignments = call_with(ch06_llm.alignments, self.params)
        self.work: list[Work] = []
        self.seen: set[str] = set()
        # set by `references` for the config being walked: its recipes and the shapes of p* and p_target
        self.refs: dict[str, Any] = {}
        self.p_star = self.p_target = None

    # ---- shapes and bookkeeping

    def shape(self, recipe) -> ModelShape:
        from ..lm.experiments import Aligned, ExactTopic, GroundTruth, Student

        if isinstance(recipe, GroundTruth):
            markov = recipe.markov
            return ground_truth_shape(recipe.ground_truth, markov.vocab_size if markov else SMOLLM2_VOCAB,
                                      markov.n_topics if markov else 0)
        if isinstance(recipe, ExactTopic):
            return self.shape(recipe.ground_truth)
        if isinstance(recipe, Aligned):
            return self.shape(recipe.reference)
        from ..lm.budget import AlignedAt

        if isinstance(recipe, AlignedAt):
            return self.shape(recipe.run.reference)
        if isinstance(recipe, Student):
            return student_shape(recipe.train.size, self.vocab)
        raise TypeError(f"no shape for {type(recipe).__name__}")

    @property
    def vocab(self) -> int:
        return self.config.markov.vocab_size if self.config.exact else SMOLLM2_VOCAB

    def once(self, key: Any, *items: Work) -> bool:
        name = config_hash(key)
        if name in self.seen:
            return False
        self.seen.add(name)
        self.work.extend(items)
        return True

    # ---- KD

    def kd_data(self, section: str, recipe, cells: int = 1) -> None:
        data = recipe.data
        sequences = data.n_samples
        if data.tau_topic < 1:  # a pilot of the teacher's topic masses, then rejection (kd.generate_dataset)
            accept = self.acceptance(data.tau_topic)
            shards = math.ceil(data.n_samples / data.shard_size)
            sequences = min(data.n_samples, 20_000) + math.ceil(data.n_samples / accept * 1.05) + 8 * shards
        self.once(("kd_data", recipe), Work(section, "KD data", self.shape(recipe.teacher), "sample", sequences,
                                             data.max_new_tokens, data.batch_size, cells=cells))

    def acceptance(self, tau_topic: float) -> float:
        """Share of a teacher's samples τ_topic keeps: Σ_k m_k (m_k / max m)^(1/τ_topic − 1), with p*'s Zipf
        weights standing in for the teacher's own masses (p' writes p*'s shares: the premise section)."""
        markov = self.config.markov
        weights = np.arange(1, markov.n_topics + 1, dtype=float) ** -markov.zipf
        weights /= weights.sum()
        return float((weights * (weights / weights.max()) ** (1 / tau_topic - 1)).sum())

    def student(self, section: str, recipe, cells: int = 1) -> None:
        """KD data, then training (with its held-out evaluations), of `recipe` (an `experiments.Student`)."""
        self.kd_data(section, recipe.data, cells)
        train, data = recipe.train, recipe.data.data
        epochs = train.epochs
        if train.early_stopping_patience:
            epochs = min(train.epochs, EARLY_STOP_EPOCHS) / (1 - train.decay)
        positions = data.max_new_tokens + PROMPT_POSITIONS
        shape = self.shape(recipe)
        items = [Work(section, "KD training", shape, "train", data.n_samples - train.validation_size, positions,
                      train.batch_size, epochs=epochs, cells=cells)]
        if train.validation_size:  # held out once per epoch and at the end
            items.append(Work(section, "KD training", shape, "score", train.validation_size * (math.ceil(epochs) + 1),
                              positions, 512, cells=cells))
        self.once(("student", recipe), *items)

    # ---- evaluation

    def evaluation(self, section: str, recipe, cells: int = 1) -> None:
        """`experiments.cached_evaluated`: n_eval samples of the model scored by p* and twice by p_target (target
        precision, the oracle's reward), and the recall set scored by the model."""
        metrics, positions = self.config.metrics, self.config.metrics.max_new_tokens + PROMPT_POSITIONS
        shape = self.shape(recipe)
        self.once(("evaluation", recipe),
                  Work(section, "evaluation", shape, "sample", metrics.n_samples, metrics.max_new_tokens, SCORE_BATCH,
                       cells=cells),
                  Work(section, "evaluation", self.p_star, "score", metrics.n_samples, positions, 512, cells=cells),
                  Work(section, "evaluation", self.p_target, "score", 2 * metrics.n_samples, positions, SCORE_BATCH,
                       cells=cells),
                  Work(section, "evaluation", shape, "score", self.config.n_recall_samples, positions, 512,
                       cells=cells))

    # ---- the references (experiments.cached_references)

    def references(self, section: str, config, cells: int = 1) -> dict[str, Any]:
        from ..lm.experiments import ExactTopic, GroundTruth, distilled

        source = GroundTruth.of(config)
        high = distilled(source, config.high_recall)
        low = distilled(high, config.low_recall)
        self.student(section, high, cells)
        self.student(section, low, cells)
        if config.exact:
            target = ExactTopic(source, config.markov.target_topic % config.markov.n_topics)
        else:
            target = distilled(high, config.target)
            self.student(section, target, cells)
        self.p_star, self.p_target = self.shape(source), self.shape(target)
        cap = config.metrics.max_new_tokens
        self.once(("references", config),  # the oracle's fold samples and the recall set: not cached, once a config
                  Work(section, "evaluation", self.p_target, "sample", config.n_fold_samples, cap, SCORE_BATCH),
                  Work(section, "evaluation", self.p_target, "score", config.n_fold_samples, cap + 1, SCORE_BATCH),
                  Work(section, "evaluation", self.p_star, "sample", config.n_recall_samples, cap, SCORE_BATCH))
        self.refs = {"p*": source, "p'": high, "p''": low, "p_target": target}
        return self.refs

    def premise(self, section: str, recipes: Mapping[str, Any], names: Sequence[str]) -> None:
        """`premise.cached_premise_check`: own samples of each model, their topics under p* (exact)."""
        n, cap = self.params["premise_samples"], self.params["max_new_tokens"]
        for name in names:
            self.once(("premise", recipes[name], n, cap),
                      Work(section, "evaluation", self.shape(recipes[name]), "sample", n, cap, SCORE_BATCH),
                      Work(section, "evaluation", self.p_star, "score", n, cap + 1, SCORE_BATCH))

    # ---- alignment (every registered algorithm: its config's `update_passes`)

    def alignment(self, section: str, reference, label: str, alignment, seed: int, cells: int) -> Any:
        from ..lm.algorithms import algorithm_of
        from ..lm.experiments import Aligned, Oracle

        entry = algorithm_of(alignment)
        oracle = Oracle(self.refs["p_target"], self.config.n_fold_samples, self.config.metrics.max_new_tokens,
                        self.config.metrics.seed + 1)
        recipe = Aligned(reference, entry.name, alignment, seed, oracle)
        policy, n, batch = self.shape(reference), alignment.n_iterations, alignment.batch_size
        cap, positions = alignment.max_new_tokens, alignment.max_new_tokens + PROMPT_POSITIONS

        def work(model, kind, sequences, length, per_call, epochs=1.0) -> Work:
            return Work(section, "alignment", model, kind, sequences, length, per_call, epochs=epochs, cells=cells)

        # every one of the n + 1 iterations samples a batch and scores it under the oracle and the reference
        items = [work(policy, "sample", (n + 1) * batch, cap, batch),
                 work(self.p_target, "score", (n + 1) * batch, positions, min(batch, SCORE_BATCH)),
                 work(policy, "score", (n + 1) * batch, positions, batch)]  # the frozen reference
        items += [work(policy, p.kind, p.sequences, positions, p.per_call, epochs=p.epochs)
                  for p in alignment.update_passes()]  # what each algorithm's update adds, said by its config
        self.once(("alignment", recipe), *items)
        return recipe

    # ---- the chapter

    def pipelines(self, section: str, config, labels: Sequence[str], taus_of: Mapping[str, Sequence[float]],
                  cells: int, ka_only: bool = False) -> dict:
        """`experiments.cached_cell_rows` for every label and seed: K-A, A-K, A-K's final KDs, their evaluations."""
        from ..lm.experiments import distilled, final_stage

        refs = self.references(section, config, cells)
        runs = {}
        for label in labels:
            alignment = self.alignments[label]
            for seed in self.params["seeds"]:
                ka = self.alignment(section, refs["p''"], label, alignment, seed, cells)
                self.evaluation(section, ka, cells)
                runs[label, seed] = ka, None
                if ka_only:
                    continue
                ak = self.alignment(section, refs["p'"], label, alignment, seed, cells)
                self.evaluation(section, ak, cells)
                finals = []
                for tau in taus_of[label]:
                    final = distilled(ak, final_stage(config, tau, seed))
                    self.student(section, final, cells)
                    self.evaluation(section, final, cells)
                    finals.append(final)
                runs[label, seed] = ka, finals
        return runs


SECTIONS = ("references", "pipelines", "budget dose", "capacity 2 × 2", "coverage sweep", "SmolLM2 section")
STAGES = ("KD data", "KD training", "alignment", "evaluation")


def chapter_work(params: Mapping[str, Any], *, length_study: bool = True) -> list[Work]:
    """Every pass chapter 06 makes under `params` (its parameters by name, e.g. `alignkd.chapters.profile_values`),
    each cached result once, in the order the chapter builds them. `length_study=False` leaves out the length-matched
    gains (`studies.cached_length_gaps`), which `benchmarks/gpu_smoke.py` does not run."""
    plan = _Plan(params)
    p, config = plan.params, plan.config
    refs = plan.references("references", config)
    if config.exact:
        plan.premise("references", refs, ("p*", "p'", "p''"))
    for name in ("p*", "p'", "p''", "p_target"):
        plan.evaluation("references", refs[name])
    labels = list(plan.alignments)
    taus_of = {label: p["final_taus"] if label in p["tau_sweep_algorithms"] else p["final_taus"][:1]
               for label in labels}
    cells = len(labels) * len(p["seeds"])
    runs = plan.pipelines("pipelines", config, labels, taus_of, cells)
    cap = config.metrics.max_new_tokens
    for (label, seed), (ka, finals) in runs.items() if length_study else ():  # A-K's first final KD and K-A
        for model in (finals[0], ka):
            plan.once(("length", model),
                      Work("pipelines", "evaluation", plan.shape(model), "sample", LENGTH_SAMPLES, cap, SCORE_BATCH),
                      Work("pipelines", "evaluation", plan.p_target, "score", LENGTH_SAMPLES, cap + 1, SCORE_BATCH))
    if config.exact:
        _capacity_grid(plan, [label for label in p["capacity_algorithms"] if label in plan.alignments])
        if p["budget_section"]:
            _budget_dose(plan, [label for label in p["budget_algorithms"] if label in plan.alignments])
        if p["coverage_section"]:
            _coverage_sweep(plan, [label for label in p["coverage_algorithms"] if label in plan.alignments])
    if p["smollm2_section"]:
        _smollm2_section(plan)
    return plan.work


def _capacity_grid(plan: _Plan, labels: Sequence[str]) -> None:
    """`studies.cached_capacity_grid`: K-A references of p''s and p'''s sizes, pruned and not, each aligned per seed."""
    from ..lm.config import StageConfig
    from ..lm.experiments import distilled

    config, section = plan.config, "capacity 2 × 2"
    low = config.low_recall
    sizes = list(dict.fromkeys((config.high_recall.train.size, low.train.size)))
    tau_topics = list(dict.fromkeys((low.data.tau_topic, 1.0)))
    for label in labels:
        for size in sizes:
            for tau_topic in tau_topics:
                stage = StageConfig(dataclasses.replace(low.data, tau_topic=tau_topic),
                                    dataclasses.replace(low.train, size=size))
                cells = len(sizes) * len(tau_topics) * len(plan.params["seeds"])
                plan.pipelines(section, dataclasses.replace(config, low_recall=stage), [label], {}, cells,
                               ka_only=True)
                plan.evaluation(section, distilled(plan.refs["p'"], stage))


def _budget_dose(plan: _Plan, labels: Sequence[str]) -> None:
    """`budget.cached_budget_dose`: per label, seed and pipeline one run for the largest budget, its policy
    evaluated after every budget, and A-K's final KD after the smallest and the largest."""
    from ..lm.algorithms import algorithm_of
    from ..lm.budget import AlignedAt, BudgetRun, budget_config, check_budgets
    from ..lm.experiments import Oracle, distilled, final_stage

    config, section, p = plan.config, "budget dose", plan.params
    budgets = check_budgets(p["budgets"])
    cells = len(labels) * len(p["seeds"])
    oracle = Oracle(plan.refs["p_target"], config.n_fold_samples, config.metrics.max_new_tokens,
                    config.metrics.seed + 1)
    for label in labels:
        run_config = budget_config(plan.alignments[label], budgets)
        for seed in p["seeds"]:
            for name in ("p''", "p'"):
                plan.alignment(section, plan.refs[name], label, run_config, seed, cells)
                run = BudgetRun(plan.refs[name], algorithm_of(run_config).name, run_config, seed, oracle, budgets)
                for budget in budgets:
                    plan.evaluation(section, AlignedAt(run, budget), cells)
                    if name == "p'" and budget in (budgets[0], budgets[-1]):
                        final = distilled(AlignedAt(run, budget), final_stage(config, p["final_taus"][0], seed))
                        plan.student(section, final, cells)
                        plan.evaluation(section, final, cells)


def _coverage_sweep(plan: _Plan, labels: Sequence[str]) -> None:
    """`studies.cached_coverage_sweep`: p'' re-distilled per τ_topic, its premise share, K-A and A-K per label and
    seed."""
    from ..lm.config import StageConfig

    config, section = plan.config, "coverage sweep"
    low, p = config.low_recall, plan.params
    first = {label: p["final_taus"][:1] for label in labels}
    cells = len(p["coverage_tau_topics"]) * len(labels) * len(p["seeds"])
    for tau_topic in p["coverage_tau_topics"]:
        swept = dataclasses.replace(config, low_recall=StageConfig(dataclasses.replace(low.data, tau_topic=tau_topic),
                                                                    low.train))
        plan.pipelines(section, swept, labels, first, cells)
        plan.premise(section, plan.refs, ("p''",))
        for name in ("p*", "p'", "p''", "p_target"):
            plan.evaluation(section, plan.refs[name])


def _smollm2_section(plan: _Plan) -> None:
    """`smollm2.cached_recall_study`: p' and p'' from the offline SmolLM2-135M-Instruct, the recall set scored by
    p*, p', p''."""
    from . import ch06_llm, named
    from ..lm.experiments import GroundTruth, distilled

    config = ch06_llm.smollm2_config(named(ch06_llm.config, plan.params), **named(ch06_llm.smollm2_config, plan.params))
    section = "SmolLM2 section"
    source = GroundTruth.of(config)
    high = distilled(source, config.high_recall)
    low = distilled(high, config.low_recall)
    outer = plan.config
    plan.config = config  # students of this section are on SmolLM2's vocabulary
    plan.student(section, high)
    plan.student(section, low)
    cap, n = config.metrics.max_new_tokens, config.n_recall_samples
    plan.once(("smollm2 recall", config),
              Work(section, "evaluation", plan.shape(source), "sample", n, cap, SCORE_BATCH),
              *[Work(section, "evaluation", plan.shape(r), "score", n, cap + 1, SCORE_BATCH)
                for r in (source, high, low)])
    plan.config = outer


# --------------------------------------------------------------------------- the table

def chapter_cost(params: Mapping[str, Any], found: Mapping[str, Machine] | None = None) -> pd.DataFrame:
    """One row per (section, stage) with work, in the chapter's order, then `total`: FLOPs, sampled tokens,
    trained and scored positions, and predicted minutes on each machine of `machines()` (`<key>_minutes`)."""
    found = machines(workers=params.get("workers", 0)) if found is None else found
    rows = {}
    for work in chapter_work(params):
        row = rows.setdefault((work.section, work.stage), {"section": work.section, "stage": work.stage, "flops": 0.0,
                                                           "sampled_tokens": 0.0, "trained_tokens": 0.0,
                                                           "scored_tokens": 0.0,
                                                           **{f"{key}_minutes": 0.0 for key in found}})
        row["flops"] += work.flops
        row[{"sample": "sampled_tokens", "train": "trained_tokens", "score": "scored_tokens"}[work.kind]] += work.tokens
        for key, machine in found.items():
            row[f"{key}_minutes"] += machine.work_seconds(work) / 60
    order = {(s, t): (SECTIONS.index(s), STAGES.index(t)) for s, t in rows}
    table = pd.DataFrame([rows[key] for key in sorted(rows, key=order.get)])
    total = table.drop(columns=["section", "stage"]).sum()
    return pd.concat([table, pd.DataFrame([{"section": "total", "stage": "", **total}])], ignore_index=True)


def against_record(record) -> pd.DataFrame:
    """The model against a recorded GPU run (`alignkd.lm.gpu_record.GPURecord` of `benchmarks/gpu_smoke.py`): per
    group of its stages that finished, the seconds it measured beside the seconds this model predicts for the same
    work on the machine its own throughput rows describe. Groups: `references` (p' and p'', p_target and their
    evaluation), then each algorithm whose K-A, A-K and evaluation all finished (its pipelines for every seed).
    Columns: group, measured_s, predicted_s, ratio (predicted / measured). Empty for a run without GPU rates."""
    rates = rates_of_run(record)
    columns = ["group", "measured_s", "predicted_s", "ratio"]
    if rates is None:
        return pd.DataFrame(columns=columns)
    machine = machines(records=[rates])["h200" if "H200" in rates.device else "h100x8"]
    params = dict(record.summary["params"])
    stages = {s["stage"]: s for s in record.summary.get("stages", [])}

    def predicted(algorithms: list[str], section: str) -> float:
        work = chapter_work({**params, "algorithms": algorithms}, length_study=False)
        return sum(machine.work_seconds(w) for w in work if w.section == section)

    rows = []
    if stages.get("references", {}).get("status") == "done" and params["algorithms"]:
        rows.append(("references", stages["references"]["seconds"], predicted(params["algorithms"][:1], "references")))
    for label in params["algorithms"]:
        group = [stages.get(f"{label}: {part}", {}) for part in ("K-A", "A-K", "evaluation")]
        if all(s.get("status") == "done" for s in group):
            rows.append((label, sum(s["seconds"] for s in group), predicted([label], "pipelines")))
    table = pd.DataFrame(rows, columns=columns[:3])
    return table.assign(ratio=table["predicted_s"] / table["measured_s"])


def markdown_against_record(table: pd.DataFrame) -> str:
    """`against_record`'s table as book/reproduce.md shows it."""
    lines = ["| stages | measured s | predicted s | predicted / measured |", "|---|---:|---:|---:|"]
    lines += [f"| {r.group} | {r.measured_s:.0f} | {r.predicted_s:.0f} | {r.ratio:.2f} |" for r in table.itertuples()]
    return "\n".join(lines)


def profile_cost(profile: str) -> pd.DataFrame:
    """`chapter_cost` of chapter 06's parameters under `profile`."""
    from . import profile_values

    return chapter_cost(profile_values(CHAPTER, profile))


def total_minutes(table: pd.DataFrame, machine: str) -> float:
    return float(table.loc[table["section"] == "total", f"{machine}_minutes"].iloc[0])


def _si(value: float) -> str:
    """1.23e+15 → '1.23 P': tokens and FLOPs to three significant figures (the model's precision is less)."""
    for power, prefix in ((18, "E"), (15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if abs(value) >= 10 ** power:
            return f"{value / 10 ** power:.3g} {prefix}"
    return f"{value:.3g}"


def format_table(table: pd.DataFrame, profile: str, found: Mapping[str, Machine] | None = None) -> str:
    """The cost table as `check` prints it, with where each machine's numbers come from."""
    found = found or machines()
    keys = [c.removesuffix("_minutes") for c in table.columns if c.endswith("_minutes")]
    header = ["section", "stage", "FLOP", "sampled", "trained", "scored"]
    header += [f"{MACHINE_LABELS.get(k, k)} min" for k in keys]
    lines = [[str(r["section"]), str(r["stage"]), _si(r["flops"]), _si(r["sampled_tokens"]), _si(r["trained_tokens"]),
              _si(r["scored_tokens"])] + [_number(r[f"{k}_minutes"]) for k in keys] for _, r in table.iterrows()]
    widths = [max(len(x) for x in column) for column in zip(header, *lines)]

    def text(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"chapter 06 under profile '{profile}': predicted cost (alignkd.chapters.ch06_cost; tokens: sampled, and positions "
           f"trained / scored)", text(header), text(["-" * w for w in widths])]
    out += [text(cells) for cells in lines]
    hours = {k: total_minutes(table, k) / 60 for k in keys}
    gpu_hours = {k: hours[k] * (8 if k == "h100x8" else 1) for k in keys if k != "cpu"}
    out.append("total: " + ", ".join(f"{duration(hours[k] * 60)} on {MACHINE_LABELS.get(k, k)}" for k in keys)
               + "; GPU-hours: " + ", ".join(f"{MACHINE_LABELS.get(k, k)} {_number(v)}" for k, v in gpu_hours.items()))
    out += [f"{MACHINE_LABELS.get(k, k)}: {found[k].source}" for k in keys if k in found]
    return "\n".join(out)


# --------------------------------------------------------------------------- per profile (book/reproduce.md, params/)

SUMMARY_PROFILES = ("quick", "default", "gpu-smoke", "gpu", "paper")


def _number(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def duration(minutes: float) -> str:
    """'40 s', '42.1 min' under two hours, '202 h' from there: three significant figures (more than the model knows)."""
    if minutes < 1:
        return f"{_number(minutes * 60)} s"
    return f"{_number(minutes)} min" if minutes < 120 else f"{_number(minutes / 60)} h"


def profiles_summary(profiles: Sequence[str] = SUMMARY_PROFILES) -> pd.DataFrame:
    """Per profile: chapter 06's total FLOPs, sampled tokens and predicted minutes on each machine."""
    rows = []
    for profile in profiles:
        total = profile_cost(profile).iloc[-1]
        rows.append({"profile": profile, **{k: total[k] for k in total.index if k not in ("section", "stage")}})
    return pd.DataFrame(rows)


def markdown_summary(summary: pd.DataFrame) -> str:
    """The table of book/reproduce.md (`tests/test_lm_cost.py` checks the page against it)."""
    lines = ["| profile | FLOP | sampled tokens | 2 CPU cores | 1 × H200 | 8 × H100 "
             "| GPU-hours (1 × H200 / 8 × H100) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in summary.iterrows():
        lines.append(f"| `{r['profile']}` | {_si(r['flops'])} | {_si(r['sampled_tokens'])} "
                     f"| {duration(r['cpu_minutes'])} "
                     f"| {duration(r['h200_minutes'])} | {duration(r['h100x8_minutes'])} "
                     f"| {_number(r['h200_minutes'] / 60)} / {_number(8 * r['h100x8_minutes'] / 60)} |")
    return "\n".join(lines)


def prediction_comment(profile: str) -> str:
    """The first line of a GPU profile's file (`tests/test_lm_cost.py` checks it)."""
    total = profile_cost(profile).iloc[-1]
    recorded = [Path(r.path).name for r in gpu_records() if "H200" in r.device]
    gpus = f"GPU rates from runs/gpu/{recorded[-1]}" if recorded else "GPU rates assumed"
    return (f"# Predicted by `python -m alignkd check --profile {profile}`: chapter 06 takes "
            f"{duration(total['h200_minutes'])} on one H200, {duration(total['h100x8_minutes'])} on 8 × H100, "
            f"{duration(total['cpu_minutes'])} on 2 CPU cores ({gpus}).")


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m alignkd.chapters.ch06_cost [PROFILE ...]`: the table of book/reproduce.md, then each profile's first line."""
    import sys

    profiles = list(argv if argv is not None else sys.argv[1:]) or list(SUMMARY_PROFILES)
    if any(profile.startswith("-") for profile in profiles):  # e.g. --help: this command has no options
        print(main.__doc__.split(":", 1)[0].strip("`"))
        return
    print(markdown_summary(profiles_summary(profiles)))
    from ..lm.gpu_record import records

    for record in records():
        table = against_record(record)
        if len(table):
            print(f"\n{record.path.name}: the model against the run's own stages")
            print(markdown_against_record(table))
    for profile in profiles:
        print(prediction_comment(profile))


if __name__ == "__main__":
    main()
