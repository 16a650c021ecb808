"""Worker slots: where each of a daemon's concurrent trials trains (`hpod daemon --workers N
--devices …`), with its share of the device's memory and of the CPU's cores."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hpod.errors import HpodError

DEVICE_PREFIXES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class Slot:
    index: int
    device: str | None  # None: the job's own train.device
    threads: int | None  # torch's intra-op threads; None: torch's default
    share: float  # of the device's memory limit, shared with the other slots on it


def parse_devices(text: str | None) -> list[str] | None:
    """`cuda:0,cuda:1` → the list; one clear error for anything that is not a device."""
    if text is None:
        return None
    devices = [d.strip() for d in text.split(",") if d.strip()]
    for device in devices:
        kind, _, index = device.partition(":")
        if kind not in DEVICE_PREFIXES or (index and not index.isdigit()):
            raise HpodError(f"--devices: {device!r} is not a device (cpu, cuda, cuda:N or mps)")
    if not devices:
        raise HpodError("--devices: no device given")
    return devices


def check_devices(devices: list[str] | None) -> list[str] | None:
    """Refuse a device this machine lacks (a CUDA index past the last GPU, MPS without Apple's
    GPU), so the daemon says so once at start instead of failing every trial."""
    if devices is None:
        return None
    import torch

    for device in devices:
        kind, _, index = device.partition(":")
        if kind == "cuda" and not torch.cuda.is_available():
            raise HpodError(f"--devices: {device!r}, but this torch sees no CUDA GPU (torch {torch.__version__})")
        if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
            raise HpodError(f"--devices: {device!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise HpodError(f"--devices: {device!r}, but MPS is not available on this machine")
    return devices


def visible_gpus() -> list[str]:
    import torch  # here: a daemon with one worker never needs it

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def make_slots(workers: int, devices: Sequence[str] | None = None, cores: int | None = None) -> list[Slot]:
    """`workers` slots over `devices` in turn (default: the visible GPUs, else the CPU). One
    worker on the default keeps the job's own device and torch's threads, as before there were
    slots; CPU slots divide the cores between them."""
    if workers < 1:
        raise HpodError(f"--workers {workers}: must be at least 1")
    if devices is None and workers == 1:
        return [Slot(0, None, None, 1.0)]
    chosen = list(devices) if devices is not None else (visible_gpus() or ["cpu"])
    placed = [chosen[i % len(chosen)] for i in range(workers)]
    per_device = Counter(placed)
    cpu_slots = sum(n for d, n in per_device.items() if d == "cpu")
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return [
        Slot(i, device, max(1, cores // cpu_slots) if device == "cpu" else None, 1.0 / per_device[device])
        for i, device in enumerate(placed)
    ]
