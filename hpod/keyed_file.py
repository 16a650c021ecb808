"""A JSON object of entries by key in one file of the state directory: the step-time and
micro-batch caches, shared by every process that times or probes."""

from __future__ import annotations

import fcntl
import json
import logging
import stat
from pathlib import Path

from hpod.state import write_atomic

log = logging.getLogger(__name__)

MAX_CACHE_BYTES = 64 * 2**20  # a cache file of step times or micro-batches; past it, not hpod's


class KeyedFile:
    """A JSON object of entries by key in one file, replaced atomically so that a reader never sees
    half of it, and updated under an exclusive lock so that processes writing at once keep each
    other's entries."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict:
        if not self.usable():
            return {}
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):  # absent or unreadable: a cache starts empty
            return {}

    def usable(self) -> bool:
        """Absent, or a regular file of sane size: a FIFO would block the reader, and a folder
        or a device in its place is not the cache hpod wrote."""
        try:
            info = self.path.stat()
        except OSError:
            return True
        return stat.S_ISREG(info.st_mode) and info.st_size <= MAX_CACHE_BYTES

    def put(self, key: str, entry: dict) -> None:
        self.update({key: entry})

    def update(self, entries: dict) -> None:
        if not self.usable():
            log.warning(
                "%s is not the cache hpod keeps there (not a regular file, or too large): move it away", self.path
            )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_name(self.path.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            text = json.dumps(self.read() | entries, indent=1, sort_keys=True)
            write_atomic(self.path, lambda f: f.write(text.encode()))
