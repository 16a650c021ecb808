"""Which device a trial trains on, and its mixed precision."""

from __future__ import annotations

import torch

from hpod.errors import HpodError


def check_device(name: str) -> None:
    """Refuse at enqueue a device asked for by name that this machine lacks."""
    kind = name.partition(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise HpodError(f"train.device is {name!r}, but this torch sees no CUDA GPU ({torch.__version__}): use auto")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise HpodError(f"train.device is {name!r}, but MPS is not available on this machine: use auto")


def pick_device(name: str) -> str:
    """`auto` means the best accelerator present."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def autocast(device: str) -> torch.autocast:
    """bf16 autocast on CUDA; plain fp32 on the CPU and other devices."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda")
