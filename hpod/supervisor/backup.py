"""Rolling backups of the state directory's databases, and `hpod doctor`, which checks every
database, checkpoint and samples file and can put back the newest backup that passes.

A study is days of compute: queue.db and the SQLite Optuna storage are copied with SQLite's
online backup API (a consistent snapshot while the daemon writes) at job boundaries and at most
every BACKUP_EVERY_S, into state/backups/, the newest KEEP of each kept.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sqlite3
import stat
from pathlib import Path

from hpod.state import NOT_REGULAR, StateDir, read_only_uri

log = logging.getLogger(__name__)
KEEP = 3  # backups kept per database; each is the size of its database
BACKUP_EVERY_S = 600.0
DATABASES = ("queue.db", "optuna.db")


def backups_dir(state: StateDir) -> Path:
    return state.root / "backups"


def back_up(state: StateDir) -> list[Path]:
    """Copy each database that is healthy now; prune to the newest KEEP. Never raises: a backup
    that fails is logged and the next one tries again."""
    made = []
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
    for name in DATABASES:
        source = state.root / name
        if not source.is_file() or problem(source) is not None:
            continue  # a damaged database is never copied over its good backups
        target = backups_dir(state) / f"{name}.{stamp}"
        try:
            target.parent.mkdir(mode=0o770, exist_ok=True)
            with sqlite3.connect(source, timeout=30) as src, sqlite3.connect(target) as dst:
                src.backup(dst, pages=-1, sleep=0.05)
            made.append(target)
        except (OSError, sqlite3.Error) as exc:
            log.warning("backup of %s failed: %s", source, exc)
            target.unlink(missing_ok=True)
            continue
        for old in sorted(backups_dir(state).glob(f"{name}.*"))[:-KEEP]:
            old.unlink(missing_ok=True)
    return made


def problem(path: Path) -> str | None:
    """What is wrong with a database file, or None when `PRAGMA integrity_check` says ok."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):  # opened, a FIFO would block
        return "is a directory" if stat.S_ISDIR(info.st_mode) else NOT_REGULAR
    if info.st_size == 0:
        return "is empty (0 bytes)"
    try:
        with sqlite3.connect(read_only_uri(path) or f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        return f"cannot be read ({exc})"
    return None if rows == [("ok",)] else f"fails its integrity check ({rows[0][0]})"


def file_problem(path: Path) -> str | None:
    """What is wrong with a checkpoint or samples file, or None when it loads."""
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as data:
                list(data.values())
        else:
            import torch

            torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # any damage: truncation, a bad zip, a bad pickle
        return f"cannot be loaded ({type(exc).__name__})"
    return None


def examine(state: StateDir) -> list[tuple[Path, str]]:
    """Every damaged file of the state directory, with what is wrong with it."""
    found = []
    for name in DATABASES:
        path = state.root / name
        if path.exists() and (what := problem(path)) is not None:
            found.append((path, what))
    for path in sorted(state.checkpoints.rglob("*")) if state.checkpoints.is_dir() else []:
        if path.suffix in (".pt", ".npz") and path.is_file() and (what := file_problem(path)) is not None:
            found.append((path, what))
    return found


def restore(state: StateDir, damaged: Path) -> Path | None:
    """Put back the newest backup of a damaged database that passes its integrity check, keeping
    the damaged file aside; the backup used, or None when none passes."""
    candidates = sorted(backups_dir(state).glob(f"{damaged.name}.*"), reverse=True)
    good = next((b for b in candidates if problem(b) is None), None)
    if good is None:
        return None
    aside = damaged.with_name(f"{damaged.name}.damaged-{dt.datetime.now():%Y%m%dT%H%M%S}")
    damaged.rename(aside)
    for suffix in ("-wal", "-shm"):  # the damaged file's journal belongs to it, not to the backup
        journal = damaged.with_name(damaged.name + suffix)
        if journal.exists():
            journal.rename(aside.with_name(aside.name + suffix))
    shutil.copyfile(good, damaged)
    return good
