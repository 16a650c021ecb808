"""What a queued job holds, and the study plan it stands for.

A job keeps its job file's text as it was at enqueue time, its data file's absolute path and
checksum, and the command-line overrides, so later edits of jobs/ or a different working
directory do not change what a queued job runs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hpod.data import bundled_path, load_dataset
from hpod.errors import HpodError
from hpod.job import JobSpec, parse_job
from hpod.search import StudyPlan, plan_study


def data_file(job: JobSpec) -> Path:
    return bundled_path() if job.data.path is None else Path(job.data.path).absolute()


def checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_jobs(
    job: JobSpec,
    budgets: list[int],
    horizons: list[int],
    *,
    storage: str | None = None,
    priority: int = 0,
    timeout_h: float | None = None,
) -> list[dict]:
    """Queue rows for every budget × horizon, after checking each: grid, data, splits."""
    plans = [plan_study(job, b, h) for b in budgets for h in horizons]
    for horizon in horizons:
        load_dataset(job.data, horizon)
    path = data_file(job)
    base = {
        "job_name": job.name,
        "job_text": job.text,
        "data_path": None if job.data.path is None else str(path),
        "data_sha256": checksum(path),
        "storage": storage,
        "n_trials": job.search.n_trials,
        "max_epochs": job.train.max_epochs,
        "priority": priority,
        "timeout_s": None if timeout_h is None else timeout_h * 3600,
    }
    return [{**base, "study_name": p.name, "budget": p.budget, "horizon": p.horizon} for p in plans]


def plan_from_row(row: dict) -> StudyPlan:
    """The study plan of a queued job, from what the queue kept; refuses changed data."""
    job = parse_job(row["job_text"], source=f"job {row['id']}", default_name=row["job_name"])
    job = job.with_overrides(data=row["data_path"], trials=row["n_trials"], max_epochs=row["max_epochs"])
    path = data_file(job)
    if not path.is_file():
        raise HpodError(f"data file {path} is gone since job {row['id']} was queued")
    if checksum(path) != row["data_sha256"]:
        raise HpodError(f"data file {path} changed since job {row['id']} was queued (sha256 differs)")
    return plan_study(job, row["budget"], row["horizon"])
