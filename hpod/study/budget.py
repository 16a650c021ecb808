"""Parameter budgets (`2M`, `1.5M`, `500K`, `2B`, `123456`) and forecast horizons (`h5`)."""

from __future__ import annotations

import re

from hpod.errors import HpodError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9}
_BUDGET = re.compile(r"^(\d+(?:\.\d+)?)([KMB]?)$", re.IGNORECASE)
_HORIZON = re.compile(r"^h([1-9]\d*)$", re.IGNORECASE)
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([MGT])(?:I?B)?$", re.IGNORECASE)
_MEMORY_GIB = {"M": 1 / 1024, "G": 1, "T": 1024}
MAX_BUDGET = 10**13  # 10T parameters: far past any workstation, short of float overflow
MAX_HORIZON = 10_000  # rows ahead; far longer than any series hpod can split
MAX_MEMORY_GIB = 2**20  # 1 PiB


def parse_budget(text: str) -> int:
    """Parse a budget into a parameter count; reject anything that is not a positive count."""
    match = _BUDGET.match(text.strip())
    if match is None:
        raise HpodError(f"budget {text!r} is not a count such as 2M, 1.5M, 500K, 2B or 123456")
    number, suffix = match.groups()
    value = float(number) * _SUFFIX[suffix.upper()]
    if value > MAX_BUDGET:
        raise HpodError(f"budget {text[:40]!r} is more than {MAX_BUDGET:.0e} parameters")
    if value < 1 or value != int(value):
        raise HpodError(f"budget {text!r} must be a whole, positive number of parameters")
    return int(value)


def parse_horizon(text: str) -> int:
    """Parse `hN` (N >= 1 trading days) into N."""
    match = _HORIZON.match(text.strip())
    if match is None:
        raise HpodError(f"horizon {text!r} is not of the form hN with N >= 1 (h1, h3, h5)")
    digits = match.group(1)
    if len(digits) > len(str(MAX_HORIZON)) or int(digits) > MAX_HORIZON:
        raise HpodError(f"horizon {text[:40]!r} is more than h{MAX_HORIZON} rows ahead")
    return int(digits)


def parse_memory_gib(text: str) -> float:
    """Parse a memory size (`20G`, `20GiB`, `512M`, `1.5T`, binary units) into GiB."""
    match = _MEMORY.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise HpodError(f"memory limit {text[:40]!r} is not a positive size such as 20G, 20GiB or 512M")
    gib = float(match.group(1)) * _MEMORY_GIB[match.group(2).upper()]
    if gib > MAX_MEMORY_GIB:
        raise HpodError(f"memory limit {text[:40]!r} is more than 1 PiB")
    return gib


def format_budget(count: int) -> str:
    """Write a count the way users type budgets: 2000000 -> 2M, 1500000 -> 1.5M."""
    for suffix, scale in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= scale and (count * 10) % scale == 0:
            return f"{count / scale:g}{suffix}"
    return str(count)


def parse_list(text: str, parse) -> list:
    """Parse a comma-separated list (`2M,20M`), keeping order and dropping repeats."""
    items = [parse(part) for part in text.split(",") if part.strip()]
    if not items:
        raise HpodError(f"empty list {text!r}")
    return list(dict.fromkeys(items))
