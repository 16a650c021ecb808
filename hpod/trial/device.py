"""Which device a trial trains on, and its mixed precision."""

from __future__ import annotations

import torch


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
