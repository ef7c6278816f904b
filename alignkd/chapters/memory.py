"""How much memory a chapter needs at its parameters, checked against this machine before the first chapter runs.

A rough, conservative model of each chapter's largest allocation, named by the parameters that drive it, so that
`n_trials = 1000000000` is refused in a second with what would fit, not after minutes with a `MemoryError` (or an
out-of-memory kill that takes the machine's other work with it).

- MoG chapters: evaluation dominates. `mog.metrics.evaluate` scores `rows × eval_samples` samples at once (rows =
  the settings evaluated together × trials) and peaks at about 100–230 bytes per row-sample, by machine
  (`tests/test_chapters_memory.py` measures it); the model takes `MOG_BYTES_PER_ROW_SAMPLE`.
- Chapter 06: a KD dataset held whole (tokens int64 + mask, concatenated once), the logits of one sampling batch,
  and the largest trained student with Adam's state (16 bytes per parameter); p*'s own weights for real LMs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..parameters import ParameterError

MOG_BYTES_PER_ROW_SAMPLE = 300
"""Peak bytes of one sample of one row in `mog.metrics.evaluate`: a process's peak memory grows by 168 per row-sample
on this project's machine and 97 on CI's (`tests/test_chapters_memory.py`), 177–226 with its set-up at small sizes;
rounded up."""
GB = 1024 ** 3


def _mog(values: Mapping[str, Any], settings: int, what: str) -> tuple[float, str]:
    rows = settings * values["n_trials"]
    return (MOG_BYTES_PER_ROW_SAMPLE * rows * values["eval_samples"],
            f"n_trials = {values['n_trials']} × eval_samples = {values['eval_samples']} × {settings} {what}")


def _llm(values: Mapping[str, Any]) -> tuple[float, str]:
    from .ch06_cost import SMOLLM2_VOCAB, ground_truth_shape, student_shape

    exact = values["ground_truth"] == "markov_mixture"
    vocab = values["vocab_size"] if exact else SMOLLM2_VOCAB
    length = values["max_new_tokens"] + 2
    n = max(values["n_high"], values["n_low"])
    data = 2 * n * length * 9  # int64 tokens + bool mask, and the copy concatenating the shards makes
    logits = 4 * values["sample_batch"] * vocab * 4
    student = 16 * student_shape(values["high_size"], vocab).n_params if values["device"] == "cpu" else 0
    p_star = 0 if exact else 4 * ground_truth_shape(values["ground_truth"], vocab, 0).n_params
    return (data + logits + student + p_star,
            f"max(n_high, n_low) = {n} sequences of max_new_tokens = {values['max_new_tokens']}, sample_batch = "
            f"{values['sample_batch']} × {vocab} logits, high_size = {values['high_size']!r} trained")


def chapter_bytes(chapter: str, values: Mapping[str, Any]) -> tuple[float, str]:
    """(bytes, the parameters that drive them) of one chapter at its checked `values` (defaults filled in)."""
    if chapter in ("02_mog_setup",):
        return _mog(values, 1, "model")
    if chapter in ("03_mog_alignment", "04_mog_multi_target"):
        return _mog(values, max(len(values["betas"]), len(values["checkpoints"])), "settings (betas or checkpoints)")
    if chapter == "05_mog_coverage":
        return _mog(values, len(values["beta_kds"]) + 1, "settings (beta_kds and the control)")
    if chapter == "07_pad":
        return _mog(values, len(values["pad_checkpoints"]) + 1, "settings (pad_checkpoints and the final)")
    if chapter == "06_llm":
        return _llm(values)
    return 0.0, ""


def available_bytes() -> float:
    """This machine's memory, or its cgroup's limit when lower (a container's cap)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = limit.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return float(total)


def check_memory(values_by_chapter: Mapping[str, Mapping[str, Any]], defaults: Mapping[str, Mapping[str, Any]],
                 available: float | None = None) -> None:
    """Refuse (ParameterError, in one line) any chapter whose estimate exceeds this machine's memory."""
    available = available_bytes() if available is None else available
    problems = []
    for chapter, values in values_by_chapter.items():
        full = {**defaults.get(chapter, {}), **values}
        need, drivers = chapter_bytes(chapter, full)
        if need > available:
            problems.append(f"{chapter} needs about {need / GB:.3g} GB ({drivers}); this machine has "
                            f"{available / GB:.3g} GB: lower them about {need / available:.2g}-fold")
    if problems:
        raise ParameterError("too large for this machine's memory, nothing was run: " + "; ".join(problems))
