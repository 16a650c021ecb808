"""Checkpoints: one dict per trial, written atomically (temp file, fsync, rename), read back
whole with `weights_only=True`. A kill during a write leaves the previous checkpoint intact."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hpod.state import refuse_link, write_atomic

log = logging.getLogger(__name__)


def save(path: Path, state: dict) -> None:
    """Replace `path` with `state`, so that a reader sees the old file or the new, never half."""
    write_atomic(path, lambda f: torch.save(state, f))


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
