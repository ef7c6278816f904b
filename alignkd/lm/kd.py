"""The KD stage (paper App. C.2): sample a dataset from a teacher, train a student from scratch on it.

Data generation. The teacher samples `prompt + response` sequences at token temperature τ
(top-p = 1, no top-k). Sequences are written as shards (`shard_00000.pt`, …) to a folder; a
shard is written to a temporary name and renamed when complete, so an interrupted run resumes
from the shards already on disk, and each shard's seed depends only on (seed, shard index), so
the resumed dataset equals the uninterrupted one.

Topic sharpening (τ_topic, SPEC §4) is the sequence-level analogue of the MoG chapter's β_KD:
a sample whose topic is k is kept with probability (m_k / max_j m_j)^(1/τ_topic − 1), where m_k
is the *teacher's own* topic mass (estimated from the teacher's samples), never p*'s weights.
It needs a topic classifier, so it exists only for `markov_mixture`. Token temperature alone
barely prunes a topic (a topic is settled in the first tokens), τ_topic does.

Training. Causal-LM loss on response tokens (EOS included: it is a real token, never masked as
padding; the prompt is conditioned on), AdamW (β1, β2) = (0.9, 0.95), lr 5e-4, warmup-stable-
decay schedule (1 % warmup, 20 % linear decay), gradient accumulation, bf16 autocast on GPU.
The loop runs through `accelerate`, so `accelerate launch --config_file configs/accelerate_zero2.yaml
-m alignkd.lm.kd ...` trains with DeepSpeed ZeRO-2 across GPUs; on one CPU it is a plain loop.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..validation import require_int, require_positive
from .generation import Samples
from .groundtruth import LanguageModel, check_vocabulary
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
        if path.exists():
            kept += len(Samples.load(path))
        else:
            seed = config.seed * 1_000_003 + index
            wanted = min(config.shard_size, config.n_samples - kept)
            per_shard = math.ceil(wanted / accept * (1.05 if keep is not None else 1.0)) + (8 if keep is not None else 0)
            raw = teacher.sample(per_shard, config.max_new_tokens, config.tau, seed=seed, batch_size=config.batch_size)
            if keep is not None:
                g = torch.Generator().manual_seed(seed + 7)
                topic = classify(raw).clamp_max(len(keep) - 1)
                raw = raw[torch.rand(len(raw), generator=g, dtype=torch.float64) < keep[topic]]
            raw = raw[:wanted].trim()
            tmp = path.with_suffix(".tmp")
            raw.save(tmp)
            os.replace(tmp, path)
            kept += len(raw)
        bar.update(min(kept, config.n_samples) - bar.n)
        index += 1
    bar.close()
    return out_dir


def load_dataset(directory: Path, pad_id: int, limit: int | None = None) -> Samples:
    """All shards of a dataset folder, concatenated in shard order (first `limit` sequences)."""
    paths = sorted(Path(directory).glob("shard_*.pt"))
    if not paths:
        raise FileNotFoundError(f"no shards in {directory}")
    data = Samples.cat([Samples.load(p) for p in paths], pad_id)
    return data[:limit] if limit is not None else data


# --------------------------------------------------------------------------- student training


def wsd_lambda(total_steps: int, warmup: float = 0.01, decay: float = 0.2) -> Callable[[int], float]:
    """Warmup-stable-decay: linear warmup over `warmup`·total steps, constant, linear decay to 0 over the last `decay`."""
    warmup_steps = max(1, round(warmup * total_steps))
    decay_steps = max(1, round(decay * total_steps))
    decay_start = total_steps - decay_steps

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step >= decay_start:
            return max(0.0, (total_steps - step) / decay_steps)
        return 1.0

    return factor


@dataclass(frozen=True)
class TrainConfig:
    """Student training (App. C.2)."""

    size: str = "tiny"
    """Student architecture: a key of `STUDENT_SIZES` (`smollm2-135m`, `smollm2-360m`, `tiny`, `small`, `medium`)."""
    epochs: float = 1.0
    """Passes over the dataset (fractions allowed)."""
    batch_size: int = 64
    """Micro-batch per device (paper: mini_batch_size 64)."""
    grad_accum: int = 1
    """Gradient accumulation steps; global batch = batch_size · grad_accum · world size."""
    learning_rate: float = 5e-4
    """AdamW peak learning rate (App. C.2: 5e-4)."""
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup: float = 0.01
    """Fraction of optimiser steps in linear warmup (paper: 1 %)."""
    decay: float = 0.2
    """Fraction of optimiser steps in the final linear decay (paper: 20 %)."""
    grad_clip: float = 1.0
    bf16: bool = False
    """bfloat16 autocast (paper: bf16); needs a GPU."""
    device: str = "cpu"
    """`cpu` or `cuda`; under `accelerate launch` the launcher's device wins."""
    max_positions: int = 2048
    seed: int = 0

    def __post_init__(self):
        if self.size not in STUDENT_SIZES:
            raise ValueError(f"TrainConfig.size = '{self.size}' (allowed: {', '.join(STUDENT_SIZES)})")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"TrainConfig.device = '{self.device}' (allowed: cpu, cuda)")
        if (self.bf16 or self.device == "cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"TrainConfig(bf16={self.bf16}, device='{self.device}') needs a GPU and none is visible; "
                               f"use bf16=False, device='cpu' (the quick/default profiles) or run on a GPU machine")
        require_positive(self, "epochs", "learning_rate")
        require_int(self, "batch_size", "grad_accum")
        if not (0 <= self.warmup < 1 and 0 <= self.decay < 1 and self.warmup + self.decay <= 1):
            raise ValueError(f"TrainConfig: warmup = {self.warmup}, decay = {self.decay} must be fractions summing to <= 1")


def causal_lm_loss(model, tokens: torch.Tensor, mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Mean cross-entropy of response tokens (EOS included, prompt and padding excluded)."""
    logits = model(input_ids=tokens, attention_mask=mask.long()).logits[:, :-1].float()
    positions = torch.arange(1, tokens.shape[1], device=tokens.device)
    weight = (mask[:, 1:] & (positions >= prompt_length)).float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    return (nll * weight).sum() / weight.sum().clamp_min(1)


def train_student(data: Samples, config: TrainConfig, *, vocab_size: int, bos_id: int, eos_id: int, pad_id: int,
                  model=None, progress: bool = True):
    """Train a from-scratch student (or continue `model`) on `data`; returns (model on CPU, log DataFrame)."""
    from accelerate import Accelerator

    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum,
                              mixed_precision="bf16" if config.bf16 else "no",
                              cpu=config.device == "cpu" and "LOCAL_RANK" not in os.environ)
    if model is None:
        model = make_student(config.size, vocab_size, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
                             max_positions=max(config.max_positions, data.tokens.shape[1]), seed=config.seed)
    check_vocabulary(model, vocab_size, where="student")
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:  # ZeRO-2 under `accelerate launch`: DeepSpeed needs the micro-batch without a dataloader
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
        plugin.deepspeed_config["gradient_accumulation_steps"] = config.grad_accum
    g = torch.Generator().manual_seed(config.seed)
    n_batches_per_epoch = math.ceil(len(data) / (config.batch_size * accelerator.num_processes))
    total_micro = max(1, round(config.epochs * n_batches_per_epoch))
    total_steps = max(1, total_micro // config.grad_accum)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, wsd_lambda(total_steps, config.warmup, config.decay))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    order = torch.cat([torch.randperm(len(data), generator=g) for _ in range(math.ceil(config.epochs) + 1)])
    log, running = [], []
    bar = tqdm(range(total_micro), desc=f"KD train {config.size}", disable=not progress or not accelerator.is_main_process,
               leave=False)
    global_batch = config.batch_size * accelerator.num_processes
    for micro in bar:
        batch_index = order[micro * global_batch:(micro + 1) * global_batch]
        batch_index = batch_index[accelerator.process_index::accelerator.num_processes]
        batch = data[batch_index].trim().to(accelerator.device)
        with accelerator.accumulate(model):
            loss = causal_lm_loss(model, batch.tokens, batch.mask, batch.prompt_length)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        running.append(float(loss.detach()))
        if accelerator.sync_gradients:
            log.append({"step": len(log), "loss": sum(running) / len(running), "lr": scheduler.get_last_lr()[0]})
            running = []
    model = accelerator.unwrap_model(model).float().cpu()
    model.eval()
    return model, pd.DataFrame(log, columns=["step", "loss", "lr"])


# --------------------------------------------------------------------------- command line (multi-GPU)


def main(argv: list[str] | None = None) -> None:
    """`accelerate launch [--config_file configs/accelerate_zero2.yaml] -m alignkd.lm.kd DATA OUT --size ...`."""
    parser = argparse.ArgumentParser(description="Train a KD student from scratch on a sharded dataset folder.")
    parser.add_argument("data", type=Path, help="folder of shard_*.pt files written by generate_dataset")
    parser.add_argument("out", type=Path, help="folder for save_pretrained")
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder of the ground truth's tokenizer")
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        if name in ("betas",):
            continue
        kind = type(value) if not isinstance(value, bool) else (lambda s: s.lower() in ("1", "true", "yes"))
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults) if k != "betas"})
    data = load_dataset(args.data, pad_id)
    model, log = train_student(data, config, vocab_size=len(tokenizer), bos_id=tokenizer.bos_token_id or 0,
                               eos_id=tokenizer.eos_token_id, pad_id=pad_id)
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)
        log.to_csv(args.out / "train_log.csv", index=False)


if __name__ == "__main__":
    main()
