"""The state directory: created private, an existing one left as it was, files the owner's alone."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hpod.errors import HpodError
from hpod.state import OPENED, DamagedError, StateDir, check_database
from hpod.storage import open_storage
from tests.conftest import TINY_JOB
from tests.helpers import hpod


def test_a_directory_hpod_creates_is_0700_and_one_that_was_there_keeps_its_mode(tmp_path):
    fresh = StateDir(tmp_path / "fresh").create()
    assert stat.S_IMODE(fresh.root.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # a sticky, world-writable directory: chmod 0700 would lock others out
    StateDir(shared).create()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "logs").stat().st_mode) == 0o700


def test_files_hpod_writes_are_readable_by_their_owner_only(tmp_path):
    state = tmp_path / "state"
    queued = hpod(state, "enqueue", "--budget", "20K", "--horizon", "h1", "--job", str(TINY_JOB))
    assert queued.returncode == 0, queued.stderr
    files = [p for p in state.rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}


def test_a_state_directory_under_a_regular_file_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for args in (["stop"], ["enqueue", "--budget", "20K", "--horizon", "h1", "--job", str(TINY_JOB)]):
        result = hpod(blocker / "state", *args)
        assert result.returncode == 2 and result.stderr.startswith("Error: state directory"), result.stderr
        assert result.stderr.count("\n") == 1


def test_a_storage_that_cannot_be_opened_is_one_line_without_its_password(tmp_path):
    url = f"postgresql+psycopg://hpod:s3cret@/nothing?host={tmp_path}"
    with pytest.raises(HpodError) as caught:
        open_storage(url)
    message = str(caught.value)
    assert "cannot be opened" in message and "s3cret" not in message and "\n" not in message


def cut_database(tmp_path: Path) -> tuple[Path, bytes]:
    """A real SQLite database cut short of the pages its header counts; with the bytes cut."""
    path = tmp_path / "cut.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x BLOB)")
        db.executemany("INSERT INTO t VALUES (?)", [(os.urandom(2000),) for _ in range(40)])
    whole = path.read_bytes()
    path.write_bytes(whole[:-8192])
    return path, whole[-8192:]


def test_a_database_shorter_than_its_header_says_is_truncated_unless_it_grows_to_it_meanwhile(tmp_path):
    path, tail = cut_database(tmp_path)
    with pytest.raises(DamagedError, match="is truncated"):
        check_database(path)
    OPENED.remove(path)
    grower = threading.Timer(0.3, lambda: path.open("ab").write(tail))  # a checkpoint writes page 1 first
    grower.start()
    check_database(path)  # a writer finishing its checkpoint, not damage
    grower.join()
    OPENED.remove(path)


def test_a_database_a_daemon_writes_and_checkpoints_is_never_judged_damaged_by_a_reader(tmp_path):
    path = tmp_path / "busy.db"
    writer = f"""
import os, sqlite3, time
db = sqlite3.connect({str(path)!r}, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE t (x BLOB)")
end = time.monotonic() + 3
while time.monotonic() < end:
    db.execute("INSERT INTO t VALUES (?)", (os.urandom(4000),))
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
"""
    busy = subprocess.Popen([sys.executable, "-c", writer])
    try:
        checks = 0
        while busy.poll() is None:
            if path.exists():
                check_database(path)  # raises on a file judged damaged
                OPENED.remove(path)
                checks += 1
        assert busy.returncode == 0 and checks > 100
    finally:
        busy.kill()
