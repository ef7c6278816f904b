"""Where the LM testbed computes: the device, the precision, the pre-compute hardware check, and a record
of where every forward pass actually ran.

    placement = Placement.of("cuda", bf16=True)
    model.to(placement.device)
    with placement.autocast():           # bf16 autocast on CUDA *and* on the CPU (torch's CPU autocast)
        logits = model(tokens).logits
    with placement_record() as record:   # every forward of every model / exact ground truth, tallied
        ...
    record.problems(placement)           # [] when everything ran on placement.device in its precision

Every model of the testbed (p* of every kind, students, references, policies, p_target and the oracle,
value heads) lives on the configured device and runs its forward passes under the configured autocast;
a model goes to the CPU only to be saved. bf16 runs on the CPU too, so the bf16 branch is exercised
without a GPU (CI does). The record is how a test proves it on a CPU: a global forward hook tallies the
device and autocast dtype of each top-level model's forward, and the exact ground truth notes its own use.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass

import torch

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str, bf16: bool, owner: str) -> None:
    """Fail before any compute when a config asks for hardware this machine lacks. bf16 needs nothing:
    torch autocasts to bfloat16 on the CPU as on CUDA."""
    del bf16  # every machine can: CPU autocast supports bfloat16
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"{owner}.device = {device!r}: must be one of {', '.join(DEVICES)} (or 'cuda:N')")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{owner}.device = {device!r} asks for a GPU but torch sees none (use 'cpu' or 'auto')")


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device: torch.device | str, bf16: bool):
    """bf16 autocast on the model's device type (CUDA or CPU) when asked, else a no-op context."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(resolve_device(device).type, dtype=torch.bfloat16)


@dataclass(frozen=True)
class Placement:
    """Where a model lives and in which precision it runs: master weights stay float32 on `device`,
    forward passes autocast to bfloat16 when `bf16`."""

    device: torch.device = torch.device("cpu")
    bf16: bool = False

    @staticmethod
    def of(device: str | torch.device = "cpu", bf16: bool = False) -> "Placement":
        return Placement(resolve_device(device), bool(bf16))

    def autocast(self):
        return autocast(self.device, self.bf16)

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def describe(self) -> str:
        return f"{self.device.type} {self.precision}"


CPU = Placement()


# --------------------------------------------------------------------------- the placement record


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


class PlacementRecord:
    """Tally of forward passes: (owner, device type, autocast dtype or None) -> count.

    `owner` is a model's class name (`LlamaForCausalLM`, `ValueHead`, ...) or an exact ground truth's
    (`MarkovMixture`); autocast is read for the device the owner's tensors live on."""

    def __init__(self):
        self.counts: Counter = Counter()

    def note(self, owner: str, device: torch.device) -> None:
        self.counts[owner, device.type, _autocast_dtype(device.type)] += 1

    def owners(self) -> set[str]:
        return {owner for owner, _, _ in self.counts}

    def problems(self, placement: Placement, *, exact_owners: tuple[str, ...] = ("MarkovMixture",)) -> list[str]:
        """Every tallied use that ran off `placement.device` or outside its precision (exact ground truths
        compute in float64 by design: only their device is checked)."""
        wanted = torch.bfloat16 if placement.bf16 else None
        bad = []
        for (owner, device_type, dtype), count in sorted(self.counts.items(), key=str):
            if device_type != placement.device.type:
                bad.append(f"{owner}: {count} forward(s) on {device_type}, configured {placement.device.type}")
            elif owner not in exact_owners and dtype != wanted:
                bad.append(f"{owner}: {count} forward(s) with autocast {dtype}, configured {placement.precision}")
        return bad


_ACTIVE: list[PlacementRecord] = []
_TRACKED_SUFFIXES = ("ForCausalLM",)
_TRACKED_NAMES = ("ValueHead",)


def _tracked(module: torch.nn.Module) -> bool:
    name = type(module).__name__
    return name.endswith(_TRACKED_SUFFIXES) or name in _TRACKED_NAMES


def _first_device(module: torch.nn.Module) -> torch.device | None:
    for parameter in module.parameters():
        return parameter.device
    return None


def _forward_hook(module, args):
    if _ACTIVE and _tracked(module):
        device = _first_device(module)
        if device is not None:
            for record in _ACTIVE:
                record.note(type(module).__name__, device)


def note_use(owner: object, device: torch.device) -> None:
    """For models that are not `nn.Module`s (the exact ground truth): record one use on `device`."""
    for record in _ACTIVE:
        record.note(type(owner).__name__, device)


@contextlib.contextmanager
def placement_record():
    """Record where every causal LM, value head and exact ground truth computes inside the block."""
    record = PlacementRecord()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(_forward_hook) if not _ACTIVE else None
    _ACTIVE.append(record)
    try:
        yield record
    finally:
        _ACTIVE.remove(record)
        if handle is not None:
            handle.remove()
