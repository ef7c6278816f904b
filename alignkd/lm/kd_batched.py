"""KD students of one shape trained as one computation: `train_students` is R runs of `kd.train_student` in one
`batched.BatchedLlama`, run r equal to `train_student(datas[r], configs[r], ...)` to float32 rounding.

    results = train_students(datas, [replace(config, seed=s) for s in seeds], vocab_size=, bos_id=, eos_id=, pad_id=)
    model, log = results[r]          # as train_student returns them: a LlamaForCausalLM and its LOG_COLUMNS log

Why: chapter 06 trains its KD students (a few thousand parameters) for thousands of steps of 64 sequences, and R
runs stacked on a leading dimension pay a step's Python and dispatch overhead once. The saving is modest:
`benchmarks/kd_batched.py` (6 students at chapter 06's default sizes, one thread) measured 1.23x less CPU than one
at a time. At 64 sequences of 25 tokens a step is already arithmetic- and memory-bound (the batched step costs
about R times one run's, as `batched.py` found for scoring). A run that early stopping ends leaves the stack
(`drop_finished`), so the others no longer carry it (in that benchmark 18 % of the batched run-steps had been
such passengers).

Why a module of its own and not `kd.py`: `kd.py` is the accelerate trainer (DDP, ZeRO-2, bf16 autocast, gradient
accumulation, the command line) and the data generation; this trainer has none of those and is built on
`batched.py` instead, so it refuses them (`check_batchable`) and the caller falls back to `train_student`.

What makes run r equal to its run alone, step by step:
- its student: `make_student(..., seed=configs[r].seed)`, as `train_student` builds it;
- its data order: `shuffled_order`, the generator seeded with its seed, as many passes as alone;
- its micro-batches: rows `order[k·B:(k+1)·B]` of its own training split, trimmed alone, then right-padded to the
  widest run's width (padding keys are masked and padding positions carry no loss, so they change nothing);
- its loss: summed response-token NLL over its batch's response tokens (EOS included), its gradient norm clipped
  by itself (`batched.optimizer_step`);
- its optimiser: `RunAdam` with AdamW's decoupled weight decay, eps 1e-8 and its own learning rate, `lr ·
  schedule_r(step)`, where the stable phase of schedule_r ends when run r's held-out loss stops improving;
- its evaluations (`heldout_losses`, chunks of 512 as `kd.heldout_loss`), best weights and early-stopping
  decision, kept per run (`RunState`); a run that has finished leaves the stack with its best held-out weights
  (`BatchedLlama.select`, `RunAdam.select`) while the others continue.
Leaving changes nothing for the others, bit for bit: their micro-batches keep the width that every run's rows set,
each run's slice of a batched matmul, attention or reduction does not depend on how many runs share it, and the
gradient-norm clip reduces over a strided dimension whatever the number of runs (`batched.optimizer_step`).
Where it cannot be equal: an early-stopping decision compares two held-out losses with a threshold, so if a
difference lies within float32 rounding of the threshold the two computations may decide differently, and from
there the run differs (another stable-phase end). At the chapter's sizes such a tie has not been seen: the six
benchmark runs took alone's steps exactly, their weights within 2.5e-5 of alone's after ~3,000 Adam steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import pandas as pd
import torch
from tqdm.auto import tqdm

from .batched import BatchedLlama, RunAdam, optimizer_step, stack_samples
from .generation import Samples
from .kd import LOG_COLUMNS, TrainConfig, WarmupStableDecay, launched, shuffled_passes, split_heldout, wsd_lambda
from .students import make_student

ADAMW_EPS = 1e-8  # torch.optim.AdamW's default, which train_student uses
HELDOUT_CHUNK = 512  # kd.heldout_loss's batch size: its per-chunk means are what we round like


def check_batchable(datas: Sequence[Samples], configs: Sequence[TrainConfig]) -> TrainConfig:
    """The one config the runs share (seed aside), or a ValueError naming what cannot be batched; before any work."""
    if not configs or len(datas) != len(configs):
        raise ValueError(f"{len(datas)} datasets for {len(configs)} configs: one dataset per config, at least one")
    first = configs[0]
    for config in configs[1:]:
        for f in fields(TrainConfig):
            if f.name != "seed" and getattr(config, f.name) != getattr(first, f.name):
                raise ValueError(f"TrainConfig.{f.name} differs between runs ({getattr(first, f.name)!r} vs "
                                 f"{getattr(config, f.name)!r}): train_students batches configs that differ only "
                                 f"in seed; train the others with train_student")
    alone_only = {"grad_accum": first.grad_accum != 1, "bf16": first.bf16, "device": first.device != "cpu"}
    for name, refused in alone_only.items():
        if refused:
            raise ValueError(f"TrainConfig.{name} = {getattr(first, name)!r}: train_students trains in float32 on "
                             f"the CPU with one micro-batch per step; use train_student")
    if launched():
        raise ValueError("train_students runs in one process; under torchrun / accelerate launch use train_student")
    if len({len(data) for data in datas}) != 1:
        raise ValueError(f"datasets of different lengths {[len(d) for d in datas]}: train_students needs equal "
                         f"lengths (equal steps per epoch); use train_student")
    if len({data.prompt_length for data in datas}) != 1:
        raise ValueError(f"datasets with different prompt lengths {[d.prompt_length for d in datas]}: "
                         f"use train_student")
    if len({max(first.max_positions, data.tokens.shape[1]) for data in datas}) != 1:
        raise ValueError(f"datasets of widths {[d.tokens.shape[1] for d in datas]} exceed TrainConfig.max_positions "
                         f"= {first.max_positions} unequally: their students' configs would differ; use train_student")
    return first


@dataclass
class Plan:
    """The step counts every run shares (`train_student`'s, with one process and no accumulation)."""

    batch_size: int
    steps_per_epoch: int
    max_steps: int
    eval_steps: int
    passes: int
    """Shuffled passes over the training split, as many as `train_student` draws (`kd.shuffled_passes`)."""

    @staticmethod
    def of(config: TrainConfig, train_size: int) -> "Plan":
        steps_per_epoch = math.ceil(train_size / config.batch_size)
        max_steps = max(1, round(config.epochs * steps_per_epoch))
        passes = shuffled_passes(config, train_size, max_steps, config.batch_size)
        return Plan(config.batch_size, steps_per_epoch, max_steps, config.eval_steps or steps_per_epoch, passes)


def shuffled_order(seed: int, train_size: int, passes: int) -> torch.Tensor:
    """A run's sequence order, `train_student`'s: `passes` permutations from a generator seeded with its seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randperm(train_size, generator=g) for _ in range(passes)])


@dataclass
class RunState:
    """One run's bookkeeping, `train_student`'s locals: its order and its sequences' response tokens, its schedule
    and end, its best held-out evaluation, the evaluations without improvement, its log rows."""

    order: torch.Tensor
    response_tokens: torch.Tensor
    """[training sequences] response tokens of each, counted once: a step sums its batch's (the loss normaliser)."""
    schedule: WarmupStableDecay
    end: int
    best_loss: float = math.inf
    best_state: dict | None = None
    bad: int = 0
    rows: list[dict] = field(default_factory=list)

    @staticmethod
    def start(config: TrainConfig, seed: int, train: Samples, plan: Plan) -> "RunState":
        schedule = wsd_lambda(plan.max_steps, config.warmup, config.decay)
        if config.early_stopping_patience:  # the stable phase runs until the held-out loss stops improving
            schedule.decay_start = None
        return RunState(shuffled_order(seed, len(train), plan.passes), train.response_lengths, schedule,
                        plan.max_steps)

    def keep_if_best(self, loss: float, students: BatchedLlama, run: int) -> None:
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = {name: tensor.clone() for name, tensor in students.state_dict(run).items()}

    def after_evaluation(self, loss: float, step: int, config: TrainConfig, plan: Plan, students: BatchedLlama,
                         run: int) -> None:
        """`train_student`'s evaluation at `step` steps taken: keep the best weights; with early stopping, when
        the loss has stopped improving (or the epochs ran out), go back to the best weights and start the decay."""
        previous = self.best_loss
        self.keep_if_best(loss, students, run)
        if not config.early_stopping_patience or self.schedule.decay_start is not None:
            return
        self.bad = 0 if loss < previous - config.early_stopping_threshold else self.bad + 1
        if self.bad >= config.early_stopping_patience or step >= plan.max_steps:
            students.load_state_dict(run, self.best_state)
            self.schedule.start_decay(step, round(step * config.decay / (1 - config.decay)))
            self.end = step + self.schedule.decay_steps


def micro_batch(trains: Sequence[Samples], runs: Sequence[RunState], step: int, batch_size: int,
                pad_id: int, live: Sequence[int]) -> tuple[Samples, torch.Tensor]:
    """Each run's rows of optimiser step `step`, each trimmed alone, stacked run-major and padded to the widest
    (`stack_samples`), and each run's response tokens in them (the loss normaliser, at least 1) [R].

    `live`: only those runs' blocks, in that order, still padded to the widest of all runs, so that a run's batch
    is the same tensor whichever other runs are still training (`train_students`' `drop_finished`)."""
    parts, normaliser = [], []
    for train, run in zip(trains, runs):
        index = run.order[step * batch_size:(step + 1) * batch_size]
        if len(index) < batch_size:  # `shuffled_passes` sizes every order for the longest run
            raise RuntimeError(f"step {step} runs past the {len(run.order)} sequences of the shuffled order "
                               f"(passes over {len(train)})")
        parts.append(train[index].trim())
        normaliser.append(run.response_tokens[index].sum().clamp_min(1).float())
    return live_blocks(stack_samples(parts, pad_id), len(runs), live), torch.stack(normaliser)[list(live)]


def live_blocks(batch: Samples, runs: int, live: Sequence[int]) -> Samples:
    """The blocks of the runs in `live` (in that order) of a run-major batch of `runs` equal blocks."""
    if list(live) == list(range(runs)):
        return batch
    rows = len(batch) // runs
    return batch[torch.cat([torch.arange(r * rows, (r + 1) * rows) for r in live])]


def summed_nll(students: BatchedLlama, batch: Samples, runs: int) -> torch.Tensor:
    """[R] summed cross-entropy of each run's response tokens (`kd.response_nll`, EOS included, prompt and padding
    excluded), `batch` holding R equal blocks of rows (`stack_samples`)."""
    tokens, mask = batch.tokens.view(runs, -1, batch.tokens.shape[1]), batch.mask.view(runs, -1, batch.mask.shape[1])
    weight = batch.response_mask[:, 1:].view(runs, -1, batch.mask.shape[1] - 1)
    return -(students.token_logprobs(tokens, mask) * weight).sum((1, 2))


@torch.no_grad()
def heldout_losses(students: BatchedLlama, heldouts: Sequence[Samples], pad_id: int,
                   live: Sequence[int]) -> list[float]:
    """Each run's `kd.heldout_loss` on its held-out sequences: per chunk of 512 the float32 mean per response token,
    weighted by the chunk's tokens in float64, as alone (so the early-stopping comparisons round alike).
    `live`: the runs `students` holds, in its order (see `micro_batch`); their losses, in that order."""
    totals, counts = [0.0] * len(live), [0] * len(live)
    for start in range(0, len(heldouts[0]), HELDOUT_CHUNK):
        parts = [heldout[start:start + HELDOUT_CHUNK].trim() for heldout in heldouts]
        nll = summed_nll(students, live_blocks(stack_samples(parts, pad_id), len(parts), live), len(live))
        for i, r in enumerate(live):
            n = int(parts[r].response_mask.sum())
            totals[i] += float(nll[i] / max(n, 1)) * n
            counts[i] += n
    return [total / max(count, 1) for total, count in zip(totals, counts)]


def train_students(datas: Sequence[Samples], configs: Sequence[TrainConfig], *, vocab_size: int, bos_id: int,
                   eos_id: int, pad_id: int, progress: bool = False, drop_finished: bool = True
                   ) -> list[tuple[torch.nn.Module, pd.DataFrame]]:
    """R from-scratch students, run r on `datas[r]` with `configs[r]` (configs equal but for `seed`, datasets of
    one length), trained as one `BatchedLlama`: `[(model, log)]`, run r's equal to
    `kd.train_student(datas[r], configs[r], ...)`'s to float32 rounding (module docstring). The models come back
    on the CPU, in float32, in eval mode, each with its best held-out weights (its last ones without held-out
    data), the logs with `kd.LOG_COLUMNS`.

    `drop_finished`: a run that early stopping has ended leaves the stack, so the others no longer carry it
    through their steps (its micro-batches still set the padded width, which keeps every number the same as with
    `drop_finished=False`, bit for bit: `tests/test_lm_kd_batched.py`)."""
    config = check_batchable(datas, configs)
    splits = [split_heldout(data, config.validation_size) for data in datas]
    trains, heldouts = [train for train, _ in splits], [heldout for _, heldout in splits]
    plan = Plan.of(config, len(trains[0]))
    models = [make_student(config.size, vocab_size, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
                           max_positions=max(config.max_positions, data.tokens.shape[1]), seed=c.seed)
              for data, c in zip(datas, configs)]
    students = BatchedLlama.from_models(models)
    optimizer = RunAdam(students.parameters(), lr=config.learning_rate, betas=config.betas, eps=ADAMW_EPS,
                        weight_decay=config.weight_decay)
    runs = [RunState.start(config, c.seed, train, plan) for c, train in zip(configs, trains)]
    live = list(range(len(runs)))  # the runs `students` holds, in its order
    final: dict[int, dict] = {}  # each run's weights to keep, from when it left the stack

    def keep_final(i: int) -> None:  # run live[i]'s best held-out weights, else (no held-out data) its last
        final[live[i]] = runs[live[i]].best_state or _copy(students.state_dict(i))

    bar = tqdm(total=plan.max_steps, desc=f"KD train {config.size} ×{len(runs)}", disable=not progress, leave=False)
    step = 0
    while step < max(run.end for run in runs):
        train_step(students, optimizer, trains, runs, step, config, plan, pad_id, live)
        step += 1
        evaluate_due(students, heldouts, runs, step, config, plan, pad_id, live)
        done = [i for i, r in enumerate(live) if step >= runs[r].end]
        if drop_finished and done and len(done) < len(live):
            for i in done:
                keep_final(i)
            keep = [i for i in range(len(live)) if i not in done]
            students = students.select(keep)
            optimizer = optimizer.select(keep, students.parameters())
            live = [live[i] for i in keep]
        bar.total = max(run.end for run in runs)
        bar.update(1)
    bar.close()
    for i in range(len(live)):
        keep_final(i)
    for r, model in enumerate(models):
        model.load_state_dict(final[r])
        model.eval()
    return [(model, pd.DataFrame(run.rows, columns=LOG_COLUMNS)) for model, run in zip(models, runs)]


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in state.items()}


def train_step(students: BatchedLlama, optimizer: RunAdam, trains: Sequence[Samples], runs: Sequence[RunState],
               step: int, config: TrainConfig, plan: Plan, pad_id: int, live: Sequence[int]) -> None:
    """Optimiser step `step` of every run in the stack (`live`: the runs `students` holds, in its order) that has
    not reached its end, and its log row; a finished run still in the stack is fed its rows too (one shape for
    all) but its loss is zeroed and it sits the step out."""
    held = [runs[r] for r in live]
    active = torch.tensor([step < run.end for run in held])
    batch, normaliser = micro_batch(trains, runs, step, plan.batch_size, pad_id, live)
    optimizer.lr = torch.tensor([config.learning_rate * run.schedule(step) for run in held], dtype=torch.float64)
    nll = summed_nll(students, batch, len(held))
    loss = torch.where(active, nll / normaliser, torch.zeros(()))
    optimizer_step(optimizer, loss, config.grad_clip, active=active)
    for i, run in enumerate(held):
        if active[i]:  # the row train_student logs: its lr is the next step's, as LambdaLR reports it
            run.rows.append({"step": step, "epoch": (step + 1) / plan.steps_per_epoch,
                             "phase": run.schedule.phase(step), "loss": float(loss[i].detach()),
                             "lr": config.learning_rate * run.schedule(step + 1), "eval_loss": math.nan})


def evaluate_due(students: BatchedLlama, heldouts: Sequence[Samples | None], runs: Sequence[RunState], taken: int,
                 config: TrainConfig, plan: Plan, pad_id: int, live: Sequence[int]) -> None:
    """The held-out evaluation after `taken` steps of each run in the stack that evaluates there (every
    `eval_steps` and at its end, as alone): one batched pass for the stack when any is due."""
    if heldouts[0] is None:
        return
    # a run stepped at step taken − 1 iff taken <= its end (its end moves only below, at an evaluation)
    due = [i for i, r in enumerate(live)
           if taken <= runs[r].end and (taken % plan.eval_steps == 0 or taken == runs[r].end)]
    if not due:
        return
    losses = heldout_losses(students, heldouts, pad_id, live)
    for i in due:
        run = runs[live[i]]
        run.rows[-1]["eval_loss"] = losses[i]
        run.after_evaluation(losses[i], taken, config, plan, students, i)
