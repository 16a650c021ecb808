"""How hpod's log lines look: each carries its time, so the journal or a piped log read the
morning after says when a trial ended; lines to a pipe are never padded to a width."""

from __future__ import annotations

import logging
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"  # ISO 8601 with the offset: unambiguous across a DST change
TERMINAL_TIME = "[%Y-%m-%d %H:%M:%S]"


def plain_handler(stream: TextIO) -> logging.Handler:
    """Timestamped lines for a pipe, a file or journald (the daemon's and every worker's)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    return handler
