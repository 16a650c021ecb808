"""Resource guard: the policy that pauses a trial between optimizer steps when the machine is
short of memory or hot, and lets it go on only once readings have stayed calm for a while.

The trainer asks `Guard.between_steps` after each step. Readings come from `sensors`; tests pass
scripted readings and a fake clock through the same interface.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hpod.guard.sensors import Readings
from hpod.job import GuardSpec
from hpod.state import DISK_FULL

log = logging.getLogger(__name__)
GIB, MIB = 2**30, 2**20
MEMORY_KINDS = ("memory", "pressure", "swap")

DISK_WAIT_S = 6 * 3600.0  # as long as a storage outage is waited out (supervisor/outage.py)


@dataclass(frozen=True)
class Bound:
    """One pause condition: its reading, the value that pauses and the lower one that allows a
    resume, and how to say it."""

    kind: str
    value: float
    pause_at: float
    resume_below: float
    text: str

    @property
    def pausing(self) -> bool:
        return self.value >= self.pause_at

    @property
    def calm(self) -> bool:
        return self.value < self.resume_below


def bounds(readings: Readings, spec: GuardSpec) -> list[Bound]:
    """The pause conditions that can be judged from these readings; an unknown reading is no
    bound at all, neither cool nor hot (status shows it as n/a)."""
    ram, pressure, swap_in = (readings.get(k) for k in ("ram_available", "memory_pressure_pct", "swap_in_bps"))
    memory = [
        # low memory as a "high" value: the shortfall below the floor
        None if ram is None else Bound("memory", -ram, -spec.memory_floor_gib * GIB, -spec.memory_resume_gib * GIB,
                                       f"RAM available {ram / GIB:.1f} GiB < {spec.memory_floor_gib:g} GiB"),
        None if pressure is None else Bound("pressure", pressure, spec.pressure_pause_pct, spec.pressure_resume_pct,
                                            f"memory pressure {pressure:.0f}% ≥ {spec.pressure_pause_pct:g}%"),
        None if swap_in is None else Bound("swap", swap_in / MIB, spec.swap_in_pause_mib_s, spec.swap_in_resume_mib_s,
                                           f"swap-in {swap_in / MIB:.0f} MiB/s ≥ {spec.swap_in_pause_mib_s:g} MiB/s"),
    ]  # fmt: skip
    return [b for b in memory if b is not None] + temperature_bounds(readings, spec)


def temperature_bounds(readings: Readings, spec: GuardSpec) -> list[Bound]:
    found = []
    cpu = readings.get("cpu_temp_c")
    if cpu is not None:
        limit = readings.get("cpu_temp_high_c") or spec.cpu_temp_c
        found.append(Bound("cpu", cpu, limit, limit - spec.temp_resume_drop_c, f"cpu {cpu:.0f} °C ≥ {limit:.0f} °C"))
    gpu, slowdown = readings.get("gpu_temp_c"), readings.get("gpu_temp_slowdown_c")
    if gpu is not None and slowdown is not None:
        limit = slowdown - spec.gpu_temp_margin_c
        found.append(Bound("gpu", gpu, limit, limit - spec.temp_resume_drop_c, f"gpu {gpu:.0f} °C ≥ {limit:.0f} °C"))
    throttle = readings.get("gpu_thermal_throttle")
    if throttle is not None:
        found.append(Bound("throttle", throttle, 1.0, 0.5, "gpu thermal throttling"))
    return found


@dataclass(frozen=True)
class Pause:
    reason: str
    seconds: float
    shrink: bool  # it ended by halving the micro-batch, memory pressure having persisted
    began: float | None = None  # when, as time.time(): what `hpod log` shows it at


@dataclass
class Guard:
    """The pause policy for one trial's process. `notify` hears each pause start (its reason)
    and end (None), so the daemon can show it live."""

    spec: GuardSpec
    read: Callable[[], Readings]
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    notify: Callable[[str | None], None] = lambda reason: None
    pauses: list[Pause] = field(default_factory=list)
    last_check: float | None = None

    def between_steps(self, poll: Callable[[], None], can_shrink: bool) -> bool:
        """Go on at once, or pause until readings stay calm for `hold_s`. True when the caller
        should halve its micro-batch: memory pressure outlasted `shrink_after_s` of pausing.
        `poll` runs during a pause, so that a stop still gets through (it may raise)."""
        now = self.clock()
        if self.last_check is not None and now - self.last_check < self.spec.check_s:
            return False
        self.last_check = now
        pausing = [b for b in bounds(self.read(), self.spec) if b.pausing]
        if not pausing:
            return False
        return self.pause("; ".join(b.text for b in pausing), poll, can_shrink)

    def pause(self, reason: str, poll: Callable[[], None], can_shrink: bool) -> bool:
        started, began = self.clock(), time.time()
        log.warning("pausing: %s", reason)
        self.notify(reason)
        shrink = None
        try:
            shrink = self.wait_until_calm(started, poll, can_shrink)
        finally:  # a stop during the pause still counts it
            seconds = self.clock() - started
            self.pauses.append(Pause(reason, seconds, bool(shrink), began))
            self.notify(None)
            self.last_check = self.clock()
        log.warning("resuming after %.0f s%s", seconds, " with the micro-batch halved" if shrink else "")
        return shrink

    def wait_until_calm(self, started: float, poll: Callable[[], None], can_shrink: bool) -> bool:
        """Poll until every reading has stayed under its resume bound for `hold_s`; True if
        memory pressure outlasted `shrink_after_s` first."""
        calm_since = None
        while True:
            poll()
            self.sleep(self.spec.poll_s)
            now, unsettled = self.clock(), [b for b in bounds(self.read(), self.spec) if not b.calm]
            if not unsettled:
                calm_since = now if calm_since is None else calm_since
                if now - calm_since >= self.spec.hold_s:
                    return False
                continue
            calm_since = None
            memory = any(b.kind in MEMORY_KINDS for b in unsettled)
            if memory and can_shrink and now - started >= self.spec.shrink_after_s:
                return True

    def until_written(self, write: Callable[[], None], path: Path) -> None:
        """`write()`, waiting out a full disk as a pause, so that a trial keeps its hours of
        training rather than failing on a checkpoint; past DISK_WAIT_S it fails after all."""
        started = None
        while True:
            try:
                write()
                break
            except OSError as exc:
                if exc.errno not in DISK_FULL or (started is not None and self.clock() - started > DISK_WAIT_S):
                    raise
                if started is None:
                    started, began, reason = self.clock(), time.time(), f"disk full on {path.parent} ({exc.strerror})"
                    log.warning("pausing: %s", reason)
                    self.notify(reason)
                self.sleep(self.spec.poll_s)
        if started is not None:
            self.pauses.append(Pause(reason, self.clock() - started, False, began))
            self.notify(None)
            log.warning("resuming after %.0f s: %s written", self.clock() - started, path.name)

    def take_pauses(self) -> list[dict]:
        """This trial's pauses so far, as records, forgetting them for the next trial."""
        taken, self.pauses = [asdict(p) for p in self.pauses], []
        return taken
