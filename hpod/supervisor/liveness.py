"""Who a process is, and whether it is still alive: `host:pid:start-time`, so that a reused
pid is not mistaken for the process that died. Light: `hpod status` imports it."""

from __future__ import annotations

import os
import socket

import psutil

HOST_VAR = "HPOD_HOST"  # this host's name on a shared storage (default: the hostname)


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
