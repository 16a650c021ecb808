"""A state directory whose files were damaged or replaced (a FIFO, a directory, a link out of it,
junk, a truncated or empty copy), under every command that answers at once: each ends in exit 0,
or in exit 2 with one `Error:` line, within seconds, and a link's target is never written. The
damage is generated; a real finished study's state is its base."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpod.cli import main
from tests.conftest import TINY_JOB
from tests.helpers import answered_within, write_job

STUDY = "daemon-20K-h1"
FILES = ["queue.db", "optuna.db", "step_times.json", "micro_batches.json", f"logs/{STUDY}.log", f"checkpoints/{STUDY}"]
DAMAGE = ["fifo", "directory", "link out", "dangling link", "junk", "truncated", "empty", "not utf-8"]
COMMANDS = [
    ["status"], ["status", "--json"], ["show", "1"], ["show", STUDY, "--json"], ["report"], ["report", "--json"],
    ["export", STUDY], ["log", "1"], ["plan", "--hours", "8"], ["doctor"], ["pause", "1"], ["cancel", "1"],
    ["grid", "--budget", "20K", "--horizon", "h1", "--job", str(TINY_JOB)],
    ["enqueue", "--budget", "30K", "--horizon", "h1", "--job", str(TINY_JOB), "--no-estimate"],
]  # fmt: skip
ANSWER_WITHIN_S = 10


@pytest.fixture(scope="module")
def finished_state(tmp_path_factory) -> Path:
    """One study of two one-epoch trials, run to its end by a real daemon."""
    root = tmp_path_factory.mktemp("damage")
    state, hpod = root / "state", [sys.executable, "-m", "hpod"]
    queued = ["enqueue", "--budget", "20K", "--horizon", "h1", "--job", write_job(root, epochs=1), "--no-estimate"]
    for args in (queued, ["daemon", "--until-idle"]):
        done = subprocess.run([*hpod, *args, "--state-dir", str(state)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    return state


def damage(path: Path, kind: str, cut: float, outside: Path) -> None:
    """Replace `path` (a file or a folder) with `kind` of damage."""
    original = path.read_bytes() if path.is_file() else b"x" * 1000
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    match kind:
        case "fifo":
            os.mkfifo(path)
        case "directory":
            path.mkdir()
        case "link out":
            path.symlink_to(outside)
        case "dangling link":
            path.symlink_to(outside.parent / "nowhere")
        case "junk":
            path.write_bytes(hashlib.sha512(original).digest() * 64)
        case "truncated":
            path.write_bytes(original[: int(len(original) * cut)])
        case "empty":
            path.write_bytes(b"")
        case "not utf-8":
            path.write_bytes(b"\xff\xfe" + original[:100])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(FILES),
    kind=st.sampled_from(DAMAGE),
    cut=st.floats(0.0, 0.99),
    command=st.sampled_from(COMMANDS),
)
def test_every_command_on_a_damaged_state_answers_in_one_line_and_writes_through_no_link(
    finished_state, tmp_path_factory, capsys, name, kind, cut, command
):
    work = tmp_path_factory.mktemp("case")
    state = work / "state"
    shutil.copytree(finished_state, state, symlinks=True)
    outside = work / "outside"
    outside.mkdir() if name.startswith("checkpoints") else outside.write_bytes(b"someone else's file\n")
    before = sorted(p.name for p in outside.iterdir()) if outside.is_dir() else outside.read_bytes()
    damage(state / name, kind, cut, outside)
    with answered_within(ANSWER_WITHIN_S):
        code = main([*command, "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert code in (0, 2), (command, name, kind, code, err)
    if code == 2:
        assert err.startswith("Error: ") and err.count("\n") == 1, (command, name, kind, err)
    assert "Traceback" not in out + err
    after = sorted(p.name for p in outside.iterdir()) if outside.is_dir() else outside.read_bytes()
    assert after == before, (command, name, kind)
