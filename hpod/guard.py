"""Resource guard: how much work a trial may put on the machine at once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hpod.errors import HpodError

# The replaced system's rule, kept until micro-batches are chosen from measured memory:
# (memory score upper bound, micro-batch), memory score = d_model² × n_layers / 1e9.
_MICRO_BATCH_BY_SCORE = ((0.1, 256), (0.5, 128), (1.5, 64), (3.0, 32))
_SMALLEST_MICRO_BATCH = 16


def micro_batch_for(d_model: int, n_layers: int, effective_batch: int) -> int:
    """The micro-batch for an architecture, never above the effective batch."""
    score = d_model**2 * n_layers / 1e9
    micro = next((size for bound, size in _MICRO_BATCH_BY_SCORE if score <= bound), _SMALLEST_MICRO_BATCH)
    return min(micro, effective_batch)


@dataclass(frozen=True)
class Window:
    """Hours of the day in which trials may run, e.g. 22:00-07:00 (may wrap past midnight)."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> Window:
        try:
            start, end = (dt.time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise HpodError(f"window {text!r} is not of the form HH:MM-HH:MM (e.g. 22:00-07:00)") from None
        if start == end:
            raise HpodError(f"window {text!r} is empty: start and end are equal")
        return cls(start, end)

    def contains(self, moment: dt.datetime) -> bool:
        now = moment.time()
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"
