"""Who a process is, and whether it is still alive: `host:pid:start-time`, so that a reused
pid is not mistaken for the process that died."""

from __future__ import annotations

import socket

import psutil


def process_id(pid: int | None = None) -> str:
    process = psutil.Process(pid)
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.2f}"


def is_remote(identity: str) -> bool:
    return identity.rsplit(":", 2)[0] != socket.gethostname()


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
