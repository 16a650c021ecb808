"""The daemon's run window: hours of the day in which trials may run (`hpod daemon --window`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hpod.errors import HpodError


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
        if start.tzinfo is not None or end.tzinfo is not None:
            raise HpodError(f"window {text!r}: give local hours without a time zone (e.g. 22:00-07:00)")
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
