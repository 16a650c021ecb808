"""Who a process is, and whether it is still alive: `host:pid:start-time`, so that a reused
pid is not mistaken for the process that died; and a running trial's beat, by which other
hosts on a shared storage tell a live host from a dead one (see hosts.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import psutil

from hpod.records import BEAT

if TYPE_CHECKING:
    from optuna.trial import Trial

HOST_VAR = "HPOD_HOST"  # this host's name on a shared storage (default: the hostname)
BEAT_S = 5.0  # how often a running trial says it is alive


def host_name() -> str:
    """What other hosts on a shared storage call this one; `hpod daemon --host` sets it, and the
    workers inherit it."""
    return os.environ.get(HOST_VAR) or socket.gethostname()


def process_id(pid: int | None = None) -> str:
    process = psutil.Process(pid)
    return f"{host_name()}:{process.pid}:{process.create_time():.2f}"


def host_of(identity: str) -> str:
    return identity.rsplit(":", 2)[0]


def is_remote(identity: str) -> bool:
    return host_of(identity) != host_name()


def is_dead(identity: str | None) -> bool:
    """True when the process is known to be gone; a process on another host is presumed alive."""
    if not identity:
        return True
    if is_remote(identity):
        return False
    _, pid, started = identity.rsplit(":", 2)
    try:
        process = psutil.Process(int(pid))
    except psutil.NoSuchProcess:
        return True
    return f"{process.create_time():.2f}" != started or process.status() == psutil.STATUS_ZOMBIE


class Beat:
    """A thread that stamps the trial's BEAT attribute every `interval` seconds until stopped;
    it dies with the worker, which is what lets other hosts see that a host is gone."""

    def __init__(self, trial: Trial, interval: float = BEAT_S):
        self.trial, self.interval = trial, interval
        self.stopped = threading.Event()
        self.stamp()
        threading.Thread(target=self.run, daemon=True, name="beat").start()

    def stamp(self) -> None:
        self.trial.set_user_attr(BEAT, time.time())

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(Exception):  # a storage hiccup must not end the trial; the next beat retries
                self.stamp()

    def stop(self) -> None:
        self.stopped.set()
