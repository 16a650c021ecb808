"""`hpod status --watch` in a real pseudo-terminal: it redraws in place at the terminal's width,
with no row wider than the terminal, until Ctrl-C."""

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.conftest import TINY_JOB
from tests.helpers import hpod

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def watch_in_terminal(state, columns: int, seconds: float = 4.0) -> tuple[str, int]:
    """What `hpod status --watch 1` writes to a terminal `columns` wide in `seconds`, then
    Ctrl-C; and its exit code."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm"}
    command = [sys.executable, "-m", "hpod", "status", "--watch", "1", "--state-dir", str(state)]
    process = subprocess.Popen(  # Ctrl-C as a terminal delivers it, even under a shell that ignores it
        command, stdin=follower, stdout=follower, stderr=follower, env=env, preexec_fn=default_sigint
    )
    os.close(follower)
    output, start, interrupted = b"", time.monotonic(), False
    while process.poll() is None or select.select([leader], [], [], 0)[0]:
        if time.monotonic() - start > seconds and not interrupted:
            process.send_signal(signal.SIGINT)
            interrupted = True
        if time.monotonic() - start > seconds + 30:
            process.kill()  # it did not leave on Ctrl-C: the exit code below fails the test
        if not select.select([leader], [], [], 0.2)[0]:
            continue
        try:
            output += os.read(leader, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
    os.close(leader)
    return output.decode(errors="replace"), process.wait(timeout=30)


def default_sigint() -> None:
    """A process started in the background of a non-interactive shell inherits SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("columns", [80, 120])
def test_status_watch_redraws_within_the_terminal_width_until_ctrl_c(tmp_path, columns):
    state = tmp_path / "state"
    result = hpod(
        state, "enqueue", "--budget", "20K,50K", "--horizon", "h1,h5", "--job", str(TINY_JOB), "--no-estimate"
    )
    assert result.returncode == 0, result.stderr
    text, code = watch_in_terminal(state, columns)
    assert code == 0
    lines = [line for chunk in ESCAPES.sub("", text).split("\n") for line in chunk.split("\r")]
    assert text.count("read at") >= 2  # redrawn, not printed once
    assert sum("tiny-20K-h1" in line or " 20K h1 " in line for line in lines) >= 2
    assert max(map(len, lines)) <= columns, max(lines, key=len)
    assert "…" not in text  # columns dropped whole, no cell cut to fit


def test_status_watch_refuses_a_pipe_in_one_line(tmp_path):
    result = hpod(tmp_path / "state", "status", "--watch")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--watch" in result.stderr
