"""The KD stage (paper App. C.2): sample a dataset from a teacher, train a student from scratch on it.

Data generation. The teacher samples `prompt + response` sequences at token temperature τ
(top-p = 1, no top-k). Sequences are written as shards (`shard_00000.pt`, …) to a folder; a
shard is written to a temporary name and renamed when complete, so an interrupted run resumes
from the shards already on disk, and each shard's seed depends only on (seed, shard index), so
the resumed dataset equals the uninterrupted one.

Topic sharpening (τ_topic, SPEC §4) is the sequence-level analogue of the MoG chapter's β_KD:
a sample whose topic is k is kept with probability (m_k / max_j m_j)^(1/τ_topic − 1), where m_k
is the *teacher's own* topic share (the share of the teacher's samples on topic k), never p*'s weights.
It needs a topic classifier, so it exists only for `markov_mixture`. Token temperature alone
barely prunes a topic (a topic is settled in the first tokens), τ_topic does.

Training. Causal-LM loss on response tokens (EOS included: it is a real token, never masked as
padding; the prompt is conditioned on), AdamW (β1, β2) = (0.9, 0.95), lr 5e-4, warmup-stable-
decay schedule (1 % warmup, 20 % decay), gradient accumulation, bf16 autocast (CPU or GPU; float32
master weights). The student trains and comes back on `TrainConfig.device`. The loop runs through
`accelerate`; a launcher makes it data-parallel, and a run on N processes with micro-batch B equals a run
on one process with micro-batch N·B (same data order, schedule and gradient, up to float32 rounding):

    python -m alignkd.lm.kd DATA OUT --tokenizer DIR --batch-size 16                        # one process
    torchrun --nproc_per_node 2 -m alignkd.lm.kd DATA OUT --tokenizer DIR --batch-size 8     # DDP (gloo on CPU)
    accelerate launch --config_file configs/accelerate_zero2.yaml -m alignkd.lm.kd DATA OUT \
        --tokenizer DIR --size smollm2-360m --bf16 true --device cuda                       # ZeRO-2, 8 GPUs

Every `TrainConfig` field is a flag (`--grad-accum 2`, `--betas 0.9 0.95`, `--bf16 true`); rank 0 writes
OUT (save_pretrained, the tokenizer, train_log.csv).
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..cache import crash_point, sha256_file, write_atomic
from ..validation import require_int, require_positive
from .device import autocast
from .generation import Samples
from .models import LanguageModel, bos_id_of, check_vocabulary
from .students import STUDENT_SIZES, make_student

SHARD_PATTERN = "shard_{:05d}.pt"


# --------------------------------------------------------------------------- data generation


@dataclass(frozen=True)
class KDDataConfig:
    """How a KD dataset is sampled from a teacher (App. C.2)."""

    n_samples: int = 10_000
    """Sequences in the dataset (paper: 10,000,000)."""
    max_new_tokens: int = 24
    """Response length cap (paper: 512 for KD data)."""
    tau: float = 1.0
    """Token temperature τ (paper: 1.0 for p', 0.95 for p'', 0.8 for p_target)."""
    tau_topic: float = 1.0
    """Sequence-level topic sharpening τ_topic (1 = off; markov_mixture only, SPEC §4)."""
    shard_size: int = 20_000
    """Sequences per shard file (the unit of resumption)."""
    batch_size: int = 512
    """Sequences generated in parallel."""
    seed: int = 0

    def __post_init__(self):
        require_int(self, "n_samples", "max_new_tokens", "shard_size", "batch_size")
        require_positive(self, "tau")
        if not 0 < self.tau_topic <= 1:
            raise ValueError(f"KDDataConfig.tau_topic = {self.tau_topic}: must be in (0, 1] (1 = no sharpening)")


def topic_keep_probability(topic_mass: torch.Tensor, tau_topic: float) -> torch.Tensor:
    """P(keep a sample of topic k) = (m_k / max m)^(1/τ_topic − 1): kept topic masses ∝ m_k^(1/τ_topic)."""
    relative = topic_mass / topic_mass.max()
    return relative.clamp_min(0) ** (1.0 / tau_topic - 1.0)


def generate_dataset(teacher: LanguageModel, config: KDDataConfig, out_dir: Path, *,
                     classify: Callable[[Samples], torch.Tensor] | None = None, progress: bool = True) -> Path:
    """Sample a KD dataset from `teacher` into shards under `out_dir`; resumes from complete shards.

    `classify(samples) -> topic index per sample` is required when `config.tau_topic < 1`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.tau_topic < 1 and classify is None:
        raise ValueError(f"tau_topic = {config.tau_topic} needs a topic classifier: only the markov_mixture "
                         f"ground truth has topics (set tau_topic = 1 for other ground truths)")
    keep = None
    if config.tau_topic < 1:
        # The teacher's own topic masses, from a pilot sample with its own seed.
        pilot = teacher.sample(min(config.n_samples, 20_000), config.max_new_tokens, config.tau,
                               seed=config.seed * 1_000_003 + 999_983, batch_size=config.batch_size)
        topics = classify(pilot)
        mass = torch.bincount(topics, minlength=int(topics.max()) + 1).double() / len(topics)
        keep = topic_keep_probability(mass, config.tau_topic)
        accept = float((mass * keep).sum())
    else:
        accept = 1.0
    kept, index = 0, 0
    bar = tqdm(total=config.n_samples, desc=f"KD data τ={config.tau:g} τ_topic={config.tau_topic:g}",
               disable=not progress, leave=False)
    while kept < config.n_samples:
        path = out_dir / SHARD_PATTERN.format(index)
        shard = _verified_shard(path) if path.exists() else None
        if shard is not None:
            kept += len(shard)
        else:
            seed = config.seed * 1_000_003 + index
            wanted = min(config.shard_size, config.n_samples - kept)
            per_shard = math.ceil(wanted / accept * (1.05 if keep is not None else 1.0)) + (8 if keep is not None else 0)
            raw = teacher.sample(per_shard, config.max_new_tokens, config.tau, seed=seed,
                                 batch_size=config.batch_size).to("cpu")  # shards are CPU tensors on disk
            if keep is not None:
                g = torch.Generator().manual_seed(seed + 7)
                topic = classify(raw).clamp_max(len(keep) - 1)
                raw = raw[torch.rand(len(raw), generator=g, dtype=torch.float64) < keep[topic]]
            raw = raw[:wanted].trim()
            tmp = path.with_suffix(".tmp")
            raw.save(tmp)
            write_atomic(_checksum_path(path), lambda sidecar: sidecar.write_text(sha256_file(tmp)))
            os.replace(tmp, path)
            crash_point("kd:shard")
            kept += len(raw)
        bar.update(min(kept, config.n_samples) - bar.n)
        index += 1
    bar.close()
    return out_dir


def _checksum_path(shard: Path) -> Path:
    return shard.with_suffix(".sha256")


def _verified_shard(path: Path) -> Samples | None:
    """A shard a killed or earlier run left, if it matches the checksum written before it; else None, and the
    shard is dropped (it is sampled again from its own seed, so the dataset is the same)."""
    try:
        if _checksum_path(path).read_text().strip() == sha256_file(path):
            return Samples.load(path)
        problem = "does not match its checksum"
    except FileNotFoundError:
        problem = "has no checksum"
    except (OSError, RuntimeError, ValueError, EOFError) as error:  # torch.load's errors on a malformed file
        problem = f"is unreadable ({type(error).__name__})"
    warnings.warn(f"KD shard {path} {problem}; sampling it again", stacklevel=3)
    path.unlink(missing_ok=True)
    return None


def load_dataset(directory: Path, pad_id: int, limit: int | None = None) -> Samples:
    """All shards of a dataset folder, concatenated in shard order (first `limit` sequences)."""
    paths = sorted(Path(directory).glob("shard_*.pt"))
    if not paths:
        raise FileNotFoundError(f"no shards in {directory}")
    data = Samples.cat([Samples.load(p) for p in paths], pad_id)
    return data[:limit] if limit is not None else data


# --------------------------------------------------------------------------- student training


class WarmupStableDecay:
    """Learning-rate factor: linear warmup over `warmup_steps`, constant, then linear decay to 0 over
    `decay_steps` from `decay_start` (None: not decided yet — early stopping decides it, `start_decay`)."""

    def __init__(self, warmup_steps: int, decay_start: int | None, decay_steps: int):
        self.warmup_steps, self.decay_start, self.decay_steps = max(1, warmup_steps), decay_start, max(1, decay_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay_start is not None and step >= self.decay_start:
            return max(0.0, 1 - (step - self.decay_start) / self.decay_steps)
        return 1.0

    def start_decay(self, step: int, decay_steps: int) -> None:
        self.decay_start, self.decay_steps = step, max(1, decay_steps)

    def phase(self, step: int) -> str:
        if step < self.warmup_steps:
            return "warmup"
        return "decay" if self.decay_start is not None and step >= self.decay_start else "stable"


def shuffled_passes(config: "TrainConfig", train_size: int, max_steps: int, global_batch: int) -> int:
    """Shuffled passes over `train_size` sequences enough for the longest run of `max_steps` steps of `global_batch`:
    an early-stopped decay phase adds up to decay / (1 − decay) of the steps, and a step takes a whole global batch,
    so an epoch of ⌈N/G⌉ steps takes more than N sequences (a small dataset over many epochs ran out of them).
    Passes only ever append to the order (one generator, drawn in turn), so their count changes no step's batch."""
    steps = math.ceil(max_steps / (1 - config.decay)) + 1 if config.early_stopping_patience else max_steps
    return max(math.ceil(config.epochs * (1 + config.decay / (1 - config.decay))),
               math.ceil(steps * global_batch / max(1, train_size))) + 1


def wsd_lambda(total_steps: int, warmup: float = 0.01, decay: float = 0.2) -> WarmupStableDecay:
    """Warmup-stable-decay over a known number of steps: `warmup`·total steps of warmup, the last `decay`·total of decay."""
    decay_steps = max(1, round(decay * total_steps))
    return WarmupStableDecay(round(warmup * total_steps), total_steps - decay_steps, decay_steps)


@dataclass(frozen=True)
class TrainConfig:
    """Student training (App. C.2), with early stopping on held-out loss."""

    size: str = "tiny"
    """Student architecture: a key of `STUDENT_SIZES` (`smollm2-135m`, `smollm2-360m`, `tiny`, `small`, `medium`)."""
    epochs: float = 1.0
    """Passes over the training sequences (fractions allowed); with early stopping, the most it may take."""
    batch_size: int = 64
    """Micro-batch per process (paper: mini_batch_size 64)."""
    grad_accum: int = 1
    """Gradient accumulation steps; global batch = batch_size · grad_accum · processes. The data order and the
    schedule depend only on the global batch and the seed: 1 process × 16 equals 2 processes × 8."""
    learning_rate: float = 5e-4
    """AdamW peak learning rate (App. C.2: 5e-4)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW (β1, β2) (App. C.2)."""
    weight_decay: float = 0.0
    warmup: float = 0.01
    """Fraction of optimiser steps in linear warmup (paper: 1 %)."""
    decay: float = 0.2
    """Fraction of optimiser steps in the final linear decay (paper: 20 %)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping); DeepSpeed's `gradient_clipping` under ZeRO-2."""
    validation_size: int = 0
    """Sequences held out (the dataset's last ones) to measure held-out loss; 0 = train on all, no curve."""
    eval_steps: int = 0
    """Optimiser steps between held-out evaluations (0 = once per epoch); needs validation_size > 0."""
    early_stopping_patience: int = 0
    """Stop the stable phase after this many evaluations without an improvement of more than
    `early_stopping_threshold`, go back to the best weights and run the decay phase from there
    (warmup-stable-decay with the decay started by the held-out loss). 0 = train for `epochs`."""
    early_stopping_threshold: float = 0.0
    """Smallest drop of held-out loss (nats per token) that counts as an improvement."""
    bf16: bool = False
    """bfloat16 autocast of every forward pass, training and held-out (paper: bf16); float32 master weights.
    Works on CPU too (torch's CPU autocast)."""
    device: str = "cpu"
    """`cpu` or `cuda`. A launcher (`torchrun`, `accelerate launch`) supplies the processes, this field their
    device: gloo across CPU processes, NCCL (or DeepSpeed) across GPUs."""
    max_positions: int = 2048
    seed: int = 0

    def __post_init__(self):
        if self.size not in STUDENT_SIZES:
            raise ValueError(f"TrainConfig.size = '{self.size}' (allowed: {', '.join(STUDENT_SIZES)})")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"TrainConfig.device = '{self.device}' (allowed: cpu, cuda)")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("TrainConfig.device = 'cuda' needs a GPU and none is visible; use device='cpu' "
                               "(bf16 works there too) or run on a GPU machine")
        require_positive(self, "epochs", "learning_rate")
        require_int(self, "batch_size", "grad_accum")
        require_int(self, "validation_size", "eval_steps", "early_stopping_patience", minimum=0)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas = {self.betas}: must be two numbers in [0, 1)")
        if self.grad_clip < 0:
            raise ValueError(f"TrainConfig.grad_clip = {self.grad_clip}: must be >= 0 (0 = no clipping)")
        if not (0 <= self.warmup < 1 and 0 <= self.decay < 1 and self.warmup + self.decay <= 1):
            raise ValueError(f"TrainConfig: warmup = {self.warmup}, decay = {self.decay} must be fractions summing to <= 1")
        if self.early_stopping_patience and not self.validation_size:
            raise ValueError(f"TrainConfig.early_stopping_patience = {self.early_stopping_patience} needs held-out "
                             f"sequences: set validation_size > 0")
        if self.early_stopping_threshold < 0:
            raise ValueError(f"TrainConfig.early_stopping_threshold = {self.early_stopping_threshold}: must be >= 0")


def response_nll(model, tokens: torch.Tensor, mask: torch.Tensor,
                 prompt_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, count) of the response tokens (EOS included, prompt and padding excluded)."""
    logits = model(input_ids=tokens, attention_mask=mask.long()).logits[:, :-1].float()
    positions = torch.arange(1, tokens.shape[1], device=tokens.device)
    weight = (mask[:, 1:] & (positions >= prompt_length)).float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    return (nll * weight).sum(), weight.sum()


def causal_lm_loss(model, tokens: torch.Tensor, mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Mean cross-entropy of response tokens (EOS included, prompt and padding excluded)."""
    total, count = response_nll(model, tokens, mask, prompt_length)
    return total / count.clamp_min(1)


@torch.no_grad()
def heldout_loss(model, data: Samples, batch_size: int = 512, bf16: bool = False) -> float:
    """Cross-entropy per response token (EOS included) of `data` under `model`, on the model's device and
    under the training's bf16 autocast when `bf16`: the early-stopping criterion."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        part = data[start:start + batch_size].trim().to(device)
        n = int(part.response_mask.sum())
        with autocast(device, bf16):
            total += float(causal_lm_loss(model, part.tokens, part.mask, part.prompt_length)) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


def split_heldout(data: Samples, validation_size: int) -> tuple[Samples, Samples | None]:
    """(training sequences, held-out sequences): the last `validation_size` sequences are held out."""
    if not validation_size:
        return data, None
    if validation_size >= len(data):
        raise ValueError(f"TrainConfig.validation_size = {validation_size} leaves nothing to train on "
                         f"({len(data)} sequences)")
    return data[:len(data) - validation_size], data[len(data) - validation_size:]


LOG_COLUMNS = ["step", "epoch", "phase", "loss", "lr", "eval_loss"]


def launched() -> bool:
    """True inside `torchrun` / `accelerate launch` (they export LOCAL_RANK), even with one process."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(config: TrainConfig):
    """The `Accelerator` of one training run, on `config.device`.

    accelerate turns a launched CPU run into a gloo process group only when asked for the CPU (`cpu=True`):
    with `cpu=False` and no GPU its backend stays None and every process trains alone on all the data.
    DeepSpeed is the exception: accelerate ignores it under `cpu=True`, so a DeepSpeed launch on a CPU machine
    asks for DeepSpeed with gloo instead. Mixed precision stays "no" here: bf16 is our own autocast around each
    forward (training and held-out alike, float32 master weights, same under DDP and ZeRO-2).
    accelerate's state is a per-process singleton that refuses a second device or precision; in one plain
    process each run starts from a fresh one (a launched process trains once, in the launcher's group).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import InitProcessGroupKwargs

    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # `accelerate launch --mixed_precision`
    if launcher_precision not in ("no", "bf16" if config.bf16 else "no"):
        raise ValueError(f"the launcher asks for mixed precision '{launcher_precision}', but precision here is "
                         f"TrainConfig.bf16 = {config.bf16}: pass --bf16 true for bf16 autocast "
                         f"(fp16 is not supported)")
    if not launched():
        AcceleratorState._reset_state(reset_partial_state=True)
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    handlers = []
    if deepspeed and config.device == "cpu":
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision="no",
                              cpu=config.device == "cpu" and not deepspeed, kwargs_handlers=handlers)
    if accelerator.device.type != config.device:
        raise ValueError(f"TrainConfig.device = '{config.device}' but the launcher put this process on "
                         f"{accelerator.device}: pass --device {accelerator.device.type} or launch for {config.device}")
    return accelerator


def load_weights(accelerator, model, state: dict) -> None:
    """Put `state` into the (prepared) model; under ZeRO the optimiser's float32 partition follows, or its
    next step would write the old weights back."""
    accelerator.unwrap_model(model).load_state_dict(state)
    zero = getattr(getattr(model, "optimizer", None), "refresh_fp32_params", None)  # DeepSpeedEngine.optimizer
    if zero is not None:
        zero()


def train_student(data: Samples, config: TrainConfig, *, vocab_size: int, bos_id: int, eos_id: int, pad_id: int,
                  model=None, progress: bool = True):
    """Train a from-scratch student (or continue `model`) on `data`; returns (model, log DataFrame).

    The model comes back on the training device (`config.device`, one GPU per process when launched), in
    float32, in eval mode: later sampling and scoring run where it trained; only saving moves it to the CPU.

    The log has one row per optimiser step (`step`, `epoch`, `phase` ∈ warmup/stable/decay, mean training
    `loss` per response token of the global batch, `lr`) and the held-out loss `eval_loss` on the steps where
    it was measured (NaN elsewhere).

    Without early stopping the schedule is warmup-stable-decay over `epochs` (App. C.2). With it, the
    stable phase lasts until the held-out loss stops improving (or `epochs` run out); the weights go back to
    the best evaluation and a decay phase of `decay` / (1 − `decay`) times the steps taken so far anneals
    the learning rate to 0 from there, so the decay is the same fraction of the run as without it.
    The returned weights are the best held-out evaluation of the run (the annealed ones unless they are worse).

    Across processes (launched) every process holds all of `data` and draws the same shuffled order; optimiser
    step k trains on the global batch `order[k·G:(k+1)·G]` (G = batch_size · grad_accum · processes), each
    process on its own slice of each micro-batch. Each process scales its summed loss by
    processes · grad_accum / (response tokens of the global batch), so after accelerate's division by
    grad_accum and the all-reduce mean the gradient is the one of the mean loss per response token of the
    global batch: the 1-process gradient, up to float32 summation order.
    """
    accelerator = make_accelerator(config)
    world, accum = accelerator.num_processes, config.grad_accum
    train, heldout = split_heldout(data, config.validation_size)
    if model is None:
        model = make_student(config.size, vocab_size, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
                             max_positions=max(config.max_positions, data.tokens.shape[1]), seed=config.seed)
    check_vocabulary(model, vocab_size, where="student")
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:  # ZeRO-2 under `accelerate launch`: fill configs/zero2.json's "auto" values ourselves
        plugin.deepspeed_config.update(deepspeed_batch_settings(config, world))
    g = torch.Generator().manual_seed(config.seed)
    micro_batch = config.batch_size * world  # sequences per micro-step, all processes together
    global_batch = micro_batch * accum  # sequences per optimiser step
    # counted in global batches, so that how a global batch is split (processes, accumulation) changes nothing
    steps_per_epoch = math.ceil(len(train) / global_batch)
    max_steps = max(1, round(config.epochs * steps_per_epoch))
    eval_steps = config.eval_steps or steps_per_epoch
    early = config.early_stopping_patience > 0
    schedule = wsd_lambda(max_steps, config.warmup, config.decay)
    if early:  # the stable phase runs until the held-out loss stops improving
        schedule.decay_start = None
    # foreach: the per-tensor update batched over tensors (PyTorch picks the slower loop on CPU); same numbers
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=config.betas, foreach=True,
                                  weight_decay=config.weight_decay)
    # Not prepared: accelerate's scheduler steps once per *process* per optimiser step (the schedule would end
    # `processes` times too early) and DeepSpeed would step it again; we step it once per optimiser step.
    # Under ZeRO the wrapped optimiser shares these param groups, so the learning rate reaches it.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    passes = shuffled_passes(config, len(train), max_steps, global_batch)
    order = torch.cat([torch.randperm(len(train), generator=g) for _ in range(passes)])
    response_tokens = train.response_lengths  # every process counts each global batch's tokens without talking
    log = []
    best = {"loss": math.inf, "state": None, "step": -1}
    bad = 0
    bar = tqdm(total=max_steps, desc=f"KD train {config.size}", disable=not progress or not accelerator.is_main_process,
               leave=False)

    def evaluate_and_keep(step_row: dict) -> float:
        # every process evaluates all held-out sequences: identical weights give identical losses, hence the
        # same early-stopping decisions everywhere without a broadcast
        loss = heldout_loss(accelerator.unwrap_model(model), heldout, bf16=config.bf16)
        step_row["eval_loss"] = loss
        if loss < best["loss"]:
            best.update(loss=loss, step=step_row["step"],
                        state={k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()})
        return loss

    micro, step, end = 0, 0, max_steps
    while step < end:
        if micro % accum == 0:  # a new global batch: its response tokens normalise every process's loss
            tokens_in_step = response_tokens[order[micro * micro_batch:micro * micro_batch + global_batch]].sum()
            normaliser = tokens_in_step.clamp_min(1).float().to(accelerator.device)
            nll_in_step = torch.zeros((), device=accelerator.device)
        batch_index = order[micro * micro_batch:(micro + 1) * micro_batch][accelerator.process_index::world]
        batch = train[batch_index].trim().to(accelerator.device)
        micro += 1
        with accelerator.accumulate(model):
            with autocast(accelerator.device, config.bf16):
                nll, _ = response_nll(model, batch.tokens, batch.mask, batch.prompt_length)
            loss = nll * (world * accum) / normaliser
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad()
        nll_in_step += nll.detach()
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        row = {"step": step, "epoch": (step + 1) / steps_per_epoch, "phase": schedule.phase(step),
               "loss": float(accelerator.reduce(nll_in_step, "sum") / normaliser), "lr": scheduler.get_last_lr()[0],
               "eval_loss": math.nan}
        step += 1
        bar.update(1)
        if heldout is not None and (step % eval_steps == 0 or step == end):
            previous = best["loss"]
            current = evaluate_and_keep(row)
            if early and schedule.decay_start is None:
                bad = 0 if current < previous - config.early_stopping_threshold else bad + 1
                if bad >= config.early_stopping_patience or step >= max_steps:
                    # the held-out loss has stopped improving: anneal from the best weights
                    load_weights(accelerator, model, best["state"])
                    schedule.start_decay(step, round(step * config.decay / (1 - config.decay)))
                    end = step + schedule.decay_steps
                    bar.total = end
        log.append(row)
    bar.close()
    if heldout is not None:
        if not math.isfinite(log[-1]["eval_loss"]):
            evaluate_and_keep(log[-1])
        load_weights(accelerator, model, best["state"])
    model = accelerator.unwrap_model(model).float()  # float32 master weights (a no-op for our fp32 students)
    model.eval()
    if not launched():  # leave no accelerate state behind in a plain process (TRL builds its own)
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    return model, pd.DataFrame(log, columns=LOG_COLUMNS)


def deepspeed_batch_settings(config: TrainConfig, world_size: int) -> dict:
    """The values `configs/zero2.json` leaves "auto", as `train_student` sets them for DeepSpeed.

    No dataloader goes through `accelerate.prepare`, so accelerate cannot infer the micro-batch; and its own
    "auto" gradient clipping would be 1.0 whatever `grad_clip` says. bf16 is our autocast around the forward
    (float32 weights in the engine, as on one device), so DeepSpeed's own bf16 mode stays off."""
    return {"train_micro_batch_size_per_gpu": config.batch_size,
            "gradient_accumulation_steps": config.grad_accum,
            "train_batch_size": config.batch_size * config.grad_accum * world_size,
            "gradient_clipping": config.grad_clip,
            "bf16": {"enabled": False}}


# --------------------------------------------------------------------------- command line (multi-GPU)


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not a boolean (true/false)")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    """The command line: DATA OUT --tokenizer DIR and one `--field-name` per `TrainConfig` field."""
    parser = argparse.ArgumentParser(description="Train a KD student from scratch on a sharded dataset folder.",
                                     allow_abbrev=False)  # `--lr` must not pass for --learning-rate
    parser.add_argument("data", type=Path, help="folder of shard_*.pt files written by generate_dataset")
    parser.add_argument("out", type=Path, help="folder for save_pretrained (written by rank 0 alone)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder of the ground truth's tokenizer")
    parser.add_argument("--limit", type=int, default=None, help="train on the first LIMIT sequences only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for field in fields(TrainConfig):
        flag, default = f"--{field.name.replace('_', '-')}", field.default
        if isinstance(default, bool):
            parser.add_argument(flag, type=_flag, default=default, metavar="{true,false}")
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=type(default[0]), nargs=len(default), default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    args = parser.parse_args(argv)
    values = {field.name: getattr(args, field.name) for field in fields(TrainConfig)}
    values["betas"] = tuple(values["betas"])
    return args, TrainConfig(**values)


def main(argv: list[str] | None = None) -> None:
    """`[torchrun | accelerate launch [--config_file configs/accelerate_zero2.yaml]] -m alignkd.lm.kd DATA OUT ...`."""
    args, config = parse_args(argv)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bos_id = bos_id_of(tokenizer, 0)
    data = load_dataset(args.data, pad_id, limit=args.limit)
    model, log = train_student(data, config, vocab_size=len(tokenizer), bos_id=bos_id, eos_id=tokenizer.eos_token_id,
                               pad_id=pad_id, progress=not args.quiet)
    # every process holds the same weights; the first process of the launch writes them (once on a shared disk)
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(args.out)  # copies GPU tensors to the CPU as it writes
        tokenizer.save_pretrained(args.out)
        log.to_csv(args.out / "train_log.csv", index=False)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no process leaves (and tears the group down) before the files are written
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
