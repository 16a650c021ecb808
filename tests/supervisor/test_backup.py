"""Backups and `hpod doctor`: each database damaged as disks and people damage them, refused in
one line by every command, named by the doctor, and put back from the daemon's backup."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time

import pytest

from tests.helpers import enqueue, finish, hpod, start_daemon, study, write_job

STUDY = "daemon-20K-h1"


@pytest.fixture(scope="module")
def finished_state(tmp_path_factory):
    """A state directory whose daemon ran one job to its end (and so backed it up)."""
    root = tmp_path_factory.mktemp("backup")
    state = root / "state"
    enqueue(state, write_job(root, epochs=1))
    finish(start_daemon(state, "--until-idle"))
    return state


def damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":  # emptied a while ago: one being created this moment is left alone
        path.write_bytes(b"")
        os.utime(path, (time.time() - 60, time.time() - 60))
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "overwritten":  # a stray write over the middle of the file
        path.write_bytes(data[:4096] + b"\xff" * (len(data) - 8192) + data[-4096:])
    else:  # a garbage header
        path.write_bytes(b"x" * 100 + data[100:])


def test_the_daemon_backs_up_both_databases_at_a_job_boundary(finished_state):
    names = sorted(p.name.split(".db.")[0] for p in (finished_state / "backups").iterdir())
    assert names == ["optuna", "queue"]
    for backup in (finished_state / "backups").iterdir():
        with contextlib.closing(sqlite3.connect(backup)) as db:  # closed now: its WAL files go with it
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert hpod(finished_state, "doctor").returncode == 0


DAMAGE = [(name, how) for name in ("queue.db", "optuna.db") for how in ("empty", "truncated", "overwritten", "header")]
FAST = {("queue.db", "empty"), ("optuna.db", "truncated")}  # one kind a database in `make test`, every kind when slow


@pytest.mark.parametrize(
    ("name", "how"), [pytest.param(*case, marks=() if case in FAST else pytest.mark.slow) for case in DAMAGE]
)
def test_a_damaged_database_is_one_line_everywhere_and_the_doctor_restores_it(finished_state, tmp_path, name, how):
    state = tmp_path / "state"
    shutil.copytree(finished_state, state)
    for wal in state.glob("*.db-*"):
        wal.unlink()  # the copies were closed: their journals are checkpointed
    damage(state / name, how)
    command = ("status",) if name == "queue.db" else ("show", STUDY)
    refused = hpod(state, *command)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stdout + refused.stderr
    assert str(state / name) in refused.stderr and "hpod doctor" in refused.stderr
    assert (state / name).stat().st_size == (0 if how == "empty" else (state / name).stat().st_size)  # not replaced
    examined = hpod(state, "doctor")
    assert examined.returncode == 2 and str(state / name) in examined.stdout
    restored = hpod(state, "doctor", "--restore")
    assert restored.returncode == 0 and "restored from" in restored.stdout, restored.stdout + restored.stderr
    assert list(state.glob(f"{name}.damaged-*"))  # kept aside, not deleted
    assert hpod(state, "status").returncode == 0 and hpod(state, "doctor").returncode == 0
    assert len(study(state, STUDY).trials) == 2
