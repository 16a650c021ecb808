"""Generated command lines for every command that answers at once (all but `run` and `daemon`,
which train; their bad input has explicit tests): each ends in exit 0, or in exit 2 with one
`Error:` line and no traceback, and a refusal leaves the state directory byte-identical."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpod.cli import main
from tests.conftest import TINY_JOB
from tests.helpers import answered_within

JUNK = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
NUMBERS = st.integers(-(10**30), 10**30).map(str) | st.sampled_from(["nan", "inf", "-1", "0", "1e400", "0x10"])
BUDGETS = st.sampled_from(["20K", "50K", "2M", "1.5M", "2B", "0", "10", "9" * 40, "2X", "20K,20K", ""]) | JUNK
HORIZONS = st.sampled_from(["h1", "h5", "h0", "h" + "9" * 30, "5", "h1,h3", ""]) | JUNK
SPECIAL = ["fifo", "directory", "dangling", "not-utf8.yaml", "empty.csv", "/dev/zero"]  # made by `special_files`
FILES = st.sampled_from(SPECIAL)
JOBS = st.sampled_from([str(TINY_JOB), "nope.yaml", "/", "/dev/null"]) | FILES | JUNK
OPTIONS = {
    "enqueue": {
        "--budget": BUDGETS, "--horizon": HORIZONS, "--job": JOBS, "--trials": NUMBERS, "--max-epochs": NUMBERS,
        "--priority": NUMBERS, "--timeout": NUMBERS, "--memory-limit": st.sampled_from(["20G", "0G", "1e9T"]) | JUNK,
        "--data": st.sampled_from(["/", "nope.csv", "/dev/null"]) | FILES | JUNK,
        "--storage": st.sampled_from(["notaurl"]) | JUNK,
    },
    "grid": {"--budget": BUDGETS, "--horizon": HORIZONS, "--job": JOBS},
    "show": {},
    "export": {
        "--format": st.sampled_from(["csv", "json", "xml"]),
        "-o": st.sampled_from(["/proc/x/y", "directory", "not-utf8.yaml"]) | JUNK,  # a FIFO blocks, as `>` does
    },
    "report": {
        "--job": JUNK, "--bootstrap": NUMBERS, "--plot": st.sampled_from(["x.png", "/proc/x.png"]) | FILES | JUNK,
    },
    "status": {},
    "pause": {},
    "resume": {},
    "cancel": {},
    "import": {"--exclude-arch": st.sampled_from(["d16-L1-h2-f32", "nope"]) | JUNK},
    "retry": {"--trials": NUMBERS},
    "edit": {"--priority": NUMBERS, "--trials": NUMBERS, "--timeout": NUMBERS},
    "remove": {},
    "log": {"-n": NUMBERS, "--trial": NUMBERS},
}  # fmt: skip
POSITIONAL = {
    "show": st.lists(NUMBERS, min_size=1, max_size=1),
    "pause": st.lists(NUMBERS, min_size=1, max_size=1),
    "resume": st.lists(NUMBERS, min_size=1, max_size=1),
    "cancel": st.lists(NUMBERS, min_size=1, max_size=1),
    "export": st.lists(NUMBERS | JUNK, min_size=1, max_size=1),
    "import": st.tuples(NUMBERS, st.just("missing.json") | FILES).map(list),
    "retry": st.lists(NUMBERS | JUNK, min_size=1, max_size=1),
    "edit": st.lists(NUMBERS | JUNK, min_size=1, max_size=1),
    "log": st.lists(NUMBERS | JUNK, min_size=1, max_size=1),
    "remove": st.lists(st.sampled_from(["0", "-1", "99", "nan", "tiny-20K-h9"]) | JUNK, min_size=1, max_size=3),
}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    args = [command, *draw(POSITIONAL.get(command, st.just([])))]
    for option in draw(st.lists(st.sampled_from(sorted(OPTIONS[command])), unique=True)) if OPTIONS[command] else []:
        args += [option, draw(OPTIONS[command][option])]
    if command in ("status", "report", "export", "show") and draw(st.booleans()):
        args.append("--json" if command != "export" else "--format=json")
    return args


def snapshot(root: Path) -> dict[str, str]:
    """Every file's bytes, a database's rows rather than its bytes (closing a connection may
    checkpoint an earlier command's WAL into the file: the same rows, other bytes), and not
    SQLite's -wal/-shm files, which opening a database may create."""
    return {
        str(p.relative_to(root)): hashlib.sha256(rows(p) if p.suffix == ".db" else p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def special_files(directory: Path) -> None:
    """What a mistyped path names on a real machine: a FIFO (opened, it would block), a directory,
    a dangling link, bytes that are not text, an empty file."""
    if not (directory / "fifo").exists():
        os.mkfifo(directory / "fifo")
        (directory / "directory").mkdir()
        (directory / "dangling").symlink_to(directory / "gone")
        (directory / "not-utf8.yaml").write_bytes(b"\xff\xfe\x00search: {")
        (directory / "empty.csv").write_bytes(b"")


def rows(database: Path) -> bytes:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return "\n".join(db.iterdump()).encode()


@pytest.fixture(scope="module")
def queued_state(tmp_path_factory) -> Path:
    state = tmp_path_factory.mktemp("props") / "state"
    assert (
        main(["enqueue", "--budget", "20K", "--horizon", "h1", "--job", str(TINY_JOB), "--state-dir", str(state)]) == 0
    )
    return state


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=command_lines())
def test_every_command_line_exits_0_or_refuses_in_one_line_leaving_the_state_as_it_was(
    queued_state, tmp_path, monkeypatch, capsys, args
):
    monkeypatch.chdir(tmp_path)  # a generated -o or --plot path lands here, never in the checkout
    special_files(tmp_path)
    before = snapshot(queued_state)
    with answered_within(20):
        code = main([*args, "--state-dir", str(queued_state)])
    _, err = capsys.readouterr()
    assert code in (0, 2), (args, code, err)
    if code == 2:
        assert err.startswith("Error: ") and err.count("\n") == 1, (args, err)
        assert snapshot(queued_state) == before, args
