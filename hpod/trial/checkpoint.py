"""Checkpoints: one dict per trial, written atomically (temp file, fsync, rename), read back
whole with `weights_only=True`. A kill during a write leaves the previous checkpoint intact."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from hpod.guard.policy import DISK_FULL
from hpod.state import open_no_follow, refuse_link

log = logging.getLogger(__name__)
FULL_BELOW = 1 << 20  # a write that failed with less free space than this ran out of it


def save(path: Path, state: dict) -> None:
    """Replace `path` with `state`, so that a reader sees the old file or the new, never half."""
    write_atomic(path, lambda f: torch.save(state, f))


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a temp file beside `path`, fsync it, rename it over `path`, fsync the directory."""
    path.parent.mkdir(mode=0o770, parents=True, exist_ok=True)  # the group's only where the umask allows (state.py)
    refuse_link(path.parent)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(open_no_follow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        full = shutil.disk_usage(path.parent).free < FULL_BELOW  # before the partial file goes
        tmp.unlink(missing_ok=True)
        if full and not (isinstance(exc, OSError) and exc.errno in DISK_FULL):  # torch says "unexpected pos"
            raise OSError(errno.ENOSPC, f"no space left on device writing {path}") from exc
        raise
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a power cut
    finally:
        os.close(directory)


def load(path: Path) -> dict | None:
    """The checkpoint at `path`, or None if there is none or it cannot be read."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a damaged file must not stop the trial: it restarts instead
        log.warning("checkpoint %s is unreadable (%s); starting the trial afresh", path, exc)
        return None


def trial_dir(root: Path, study_name: str) -> Path:
    """The study's checkpoint folder; a symbolic link planted there is refused, not followed."""
    return refuse_link(refuse_link(root) / study_name)


def resume_path(root: Path, study_name: str, number: int) -> Path:
    """Where a running trial keeps its state for resuming."""
    return trial_dir(root, study_name) / f"trial_{number:05d}.pt"


def best_path(root: Path, study_name: str, number: int) -> Path:
    """Where a trial keeps the weights of its best epoch (kept for the study's best trial)."""
    return trial_dir(root, study_name) / f"trial_{number:05d}.best.pt"


def prune(root: Path, study_name: str, finished: int, losers: set[int]) -> None:
    """After trial `finished` ended: drop its resume state, and the best weights of `losers`,
    finished trials that are not the study's best. The weights of a trial still running are
    never among them: it may yet be the best (another worker's trial, when several race)."""
    resume_path(root, study_name, finished).unlink(missing_ok=True)
    for path in trial_dir(root, study_name).glob("trial_*.best.pt"):
        number = path.name.removeprefix("trial_").removesuffix(".best.pt")
        if number.isdigit() and int(number) in losers:
            path.unlink(missing_ok=True)
