"""sd_notify in a few lines, no dependency: does nothing outside systemd and never raises."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send a state line (READY=1, STATUS=…, WATCHDOG=1, STOPPING=1) to systemd, if it listens."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec for this process, or None when no watchdog is set."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


def ping_watchdog() -> None:
    """Tell systemd's watchdog this process is alive, where one is set."""
    if watchdog_interval_s() is not None:
        notify("WATCHDOG=1")
