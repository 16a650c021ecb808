"""How long a study is expected to take, as a value a queue row keeps (JSON) and in words. Apart
from the timing itself (estimate.py), so that `hpod status` and `hpod show` read it without
importing torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Estimate:
    device: str
    epoch_s: tuple[float, float]  # fastest and slowest architecture timed
    trial_s: tuple[float, float]  # fewest epochs (pruned or stopped early) on the fastest; most on the slowest
    study_s: tuple[float, float]  # the target's trials and the seed runs
    timed: dict[str, float]  # architecture key → seconds per epoch
    notes: tuple[str, ...] = ()  # what was measured otherwise than by timing the architecture itself

    @property
    def expected_s(self) -> float:
        """The range's geometric middle: what the refusal threshold is held against."""
        return math.sqrt(self.study_s[0] * self.study_s[1])

    def describe(self) -> str:
        return f"on {self.device}: epoch {span(self.epoch_s)}, trial {span(self.trial_s)}, study {span(self.study_s)}"

    def as_dict(self) -> dict:
        return asdict(self) | {"expected_s": self.expected_s}

    @classmethod
    def from_dict(cls, data: dict) -> Estimate:
        """Back from `as_dict` (a queue row keeps it as JSON)."""
        spans = (tuple(data[name]) for name in ("epoch_s", "trial_s", "study_s"))
        return cls(data["device"], *spans, data["timed"], tuple(data.get("notes", ())))


def span(seconds: tuple[float, float]) -> str:
    low, high = (duration(s) for s in seconds)
    return low if low == high else f"{low}–{high}"


def duration(seconds: float) -> str:
    """12 s, 4m10s, 3h05m, 6d04h: two units at most."""
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def short_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
