"""Waiting out a storage that cannot be reached or written: PostgreSQL restarting, a network
blip, SQLite busy past its timeout, a full disk (storage.is_unreachable). A study is days of
compute, so none of these fails a trial or a job at once: a worker's storage calls wait and
retry with backoff, saying once that they wait; the daemon stops starting the job's trials and
tries again later; the job fails only after OUTAGE_LIMIT_S of it."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hpod.storage import StorageUnreachable, is_unreachable, open_storage, shown_url, unreachable_cause
from hpod.supervisor.queue import Queue
from hpod.supervisor.systemd import ping_watchdog

log = logging.getLogger(__name__)
T = TypeVar("T")
OUTAGE_LIMIT_S = 6 * 3600.0  # hours, not seconds: a server back by the morning keeps the night's work
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0  # well under hosts.DEFAULT_GRACE_S: a trial's beats resume before another host judges it


class Outage:
    """One process's (or one held job's) view of its storage being away: since when, why, and
    how long to wait before the next try. Shared by threads (a worker's beat and its trial)."""

    def __init__(
        self, what: str, limit_s: float = OUTAGE_LIMIT_S, on_change: Callable[[str | None], None] | None = None
    ):
        self.what, self.limit_s, self.on_change = what, limit_s, on_change
        self.since: float | None = None  # wall-clock time of the first failure of this outage
        self.error: str | None = None
        self.tries = 0
        self.lock = threading.Lock()

    @classmethod
    def of_storage(cls, url: str, limit_s: float = OUTAGE_LIMIT_S, on_change=None) -> Outage:
        """An Optuna storage's outage, named by its URL with any password masked."""
        return cls(f"storage {shown_url(url)}", limit_s, on_change)

    def failed(self, exc: BaseException) -> float:
        """Note a failed try; the seconds to wait before the next. Past the limit, raise
        StorageUnreachable: the job fails, which hours of waiting could not avoid."""
        with self.lock:
            began = self.since is None
            if began:
                self.since, self.error = time.time(), root_error(exc)
            self.tries += 1
            if time.time() - self.since > self.limit_s:
                raise StorageUnreachable(f"{self.describe()}, past the limit of {hours(self.limit_s)}") from exc
            wait = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (self.tries - 1))
        if began:
            log.warning("%s; waiting for it, up to %s", self.describe(), hours(self.limit_s))
            if self.on_change is not None:
                self.on_change(self.describe())
        return wait

    def recovered(self) -> None:
        with self.lock:
            if self.since is None:
                return
            lasted = time.time() - self.since
            self.since, self.error, self.tries = None, None, 0
        log.info("%s reachable again after %.0f s", self.what, lasted)
        if self.on_change is not None:
            self.on_change(None)

    def describe(self) -> str:
        """`storage … unreachable since 01:02:03 (OperationalError: …)`, for the log and status."""
        since = "?" if self.since is None else f"{dt.datetime.fromtimestamp(self.since):%H:%M:%S}"
        return f"{self.what} unreachable since {since} ({self.error})"

    def call(self, fn: Callable[[], T], between: Callable[[], None] | None = None) -> T:
        """`fn()`, retried while the storage is away; `between` runs between tries and may
        raise (a worker asked to stop leaves its trial to be resumed)."""
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not is_unreachable(exc):
                    raise
                deadline = time.monotonic() + self.failed(exc)
                while time.monotonic() < deadline:
                    if between is not None:
                        between()
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                continue
            self.recovered()
            return result


class Patient:
    """An object whose every call waits out an outage instead of raising: an Optuna storage (Optuna
    takes any object as one, and `storages.get_storage` passes it through, so the study, its trials
    and the sampler all wait), or the daemon's queue on a full disk. `between` runs between tries:
    it may raise (a worker asked to stop) or tell a watchdog that the process is alive."""

    def __init__(self, inner, outage: Outage, between: Callable[[], None] | None = None):
        self._inner, self._outage, self._between = inner, outage, between

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def patient(*args, **kwargs):
            return self._outage.call(lambda: attr(*args, **kwargs), self._between)

        return patient


def open_patient_storage(url: str, outage: Outage, stop: Callable[[], None] | None = None) -> Patient:
    """The storage of `url`, opened and then used through the wait: a worker started while the
    server is down waits for it, as one that was training does."""
    import optuna

    return Patient(optuna.storages.get_storage(outage.call(lambda: open_storage(url), stop)), outage, stop)


def patient_queue(path: Path, limit_s: float) -> Queue:
    """The daemon's queue, whose writes wait out a full disk (or a lock held past SQLite's
    timeout) rather than killing the daemon; the watchdog hears that it waits, alive."""
    return Patient(Queue(path), Outage(f"queue {path}", limit_s), ping_watchdog)


def root_error(exc: BaseException) -> str:
    """The driver's own words (`OperationalError: connection failed: …`), not the wrappers'
    (Optuna's StorageInternalError blames "invalid data … exceeding max length")."""
    cause = unreachable_cause(exc) or exc
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0][:200] if text else ''}"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"
