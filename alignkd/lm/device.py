"""Where an LLM alignment runs: the pre-compute hardware check, the device, bf16 autocast."""

from __future__ import annotations

import contextlib

import torch

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str, bf16: bool, owner: str) -> None:
    """Fail before any compute when a config asks for hardware this machine lacks."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"{owner}.device = {device!r}: must be one of {', '.join(DEVICES)} (or 'cuda:N')")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{owner}.device = {device!r} asks for a GPU but torch sees none (use 'cpu' or 'auto')")
    if bf16 and not torch.cuda.is_available():
        raise ValueError(f"{owner}.bf16 = True needs a CUDA GPU (bf16 autocast), but torch sees none: set bf16=False")
    if bf16 and device == "cpu":
        raise ValueError(f"{owner}.bf16 = True with device = 'cpu': bf16 autocast is for the GPU; set bf16=False")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked (the paper trains in bf16, App. C), else a no-op context."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
