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
    calibrated_run_s: float | None = None  # a run's expected seconds from this machine's earlier runs of the job file
    runs: int | None = None  # the study's runs: its target's trials and the seed runs
    basis: str | None = None  # what the calibrated figure rests on

    @property
    def expected_run_s(self) -> float:
        """A run's expected seconds: calibrated when runs of this job file finished here, else
        the timed range's geometric middle."""
        if self.calibrated_run_s is not None:
            return self.calibrated_run_s
        return math.sqrt(self.trial_s[0] * self.trial_s[1])

    @property
    def expected_s(self) -> float:
        """The study's expected seconds: what the refusal threshold is held against and `plan`
        uses before a run has finished."""
        if self.calibrated_run_s is not None and self.runs is not None:
            return self.calibrated_run_s * self.runs
        return math.sqrt(self.study_s[0] * self.study_s[1])

    def describe(self) -> str:
        timed = f"epoch {span(self.epoch_s)}, trial {span(self.trial_s)}, study {span(self.study_s)}"
        if self.calibrated_run_s is None:
            return f"on {self.device}: {timed}; about {duration(self.expected_s)}, the range's middle"
        return f"on {self.device}: about {duration(self.expected_s)}, calibrated; timed steps alone: {timed}"

    @property
    def rests_on(self) -> str:
        """What the expected figure rests on, in a line."""
        return self.basis or "timed steps only: no run of this job file has finished on this host and device"

    def as_dict(self) -> dict:
        return asdict(self) | {"expected_s": self.expected_s}

    @classmethod
    def from_dict(cls, data: dict) -> Estimate:
        """Back from `as_dict` (a queue row keeps it as JSON)."""
        spans = (tuple(data[name]) for name in ("epoch_s", "trial_s", "study_s"))
        calibrated = (data.get(name) for name in ("calibrated_run_s", "runs", "basis"))
        return cls(data["device"], *spans, data["timed"], tuple(data.get("notes", ())), *calibrated)


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
