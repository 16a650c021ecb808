"""The daemon's run window: hours of the day in which trials may run (`hpod daemon --window`),
and the daemon's own pauses that it and others like it impose."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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

    def next_open(self, moment: dt.datetime) -> dt.datetime | None:
        """When the window next opens after `moment`; None while it is open."""
        if self.contains(moment):
            return None
        opens = moment.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return opens if opens > moment else opens + dt.timedelta(days=1)

    def change_line(self, opens: dt.datetime | None, waiting: bool, duration: Callable[[float], str]) -> str | None:
        """What the log says when the daemon starts or stops waiting for the window; None otherwise."""
        if opens is not None and not waiting:
            left = duration(opens.timestamp() - time.time())
            return f"waiting for the run window {self} (opens {opens:%H:%M}, in {left})"
        return f"the run window {self} is open: trials run" if opens is None and waiting else None

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass
class Pauses:
    """The daemon's own reasons to hold every trial, by name, and since when it has held them."""

    reasons: dict[str, str] = field(default_factory=dict)
    since: float | None = None

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons.values()) or None

    def set(self, name: str, reason: str | None) -> None:
        if reason is None:
            self.reasons.pop(name, None)
        else:
            self.reasons[name] = reason
        if not self.reasons:
            self.since = None
        elif self.since is None:
            self.since = time.time()
