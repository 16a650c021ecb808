"""A job file's earlier jobs in this state directory's queue, read back from their studies for the
calibration of a new estimate (study/calibration.py). The queue says which studies this machine
ran for the job file; their trials say what each run trained and how long its epochs took."""

from __future__ import annotations

import logging
from collections import Counter

import optuna

from hpod.errors import HpodError
from hpod.state import StateDir
from hpod.study.calibration import Calibration, JobRuns, calibrate, finished_runs, same_device
from hpod.study.seeds import seed_study_prefix
from hpod.supervisor.liveness import host_name
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import JobState, QueuedJob
from hpod.trial.data import data_shape

log = logging.getLogger(__name__)

LATEST_JOBS = 20  # the newest jobs of the job file read; older ones measured an older machine or hpod


def measured_calibration(state: StateDir, job_name: str, device: str) -> Calibration | None:
    """The calibration from the newest jobs of `job_name` that a daemon started here; None when
    none has finished a run on this host and device (or the state directory has no queue yet)."""
    if not state.queue_db.is_file():
        return None
    queue = Queue.existing(state)
    try:
        jobs = queue.queued_jobs(
            "SELECT * FROM jobs WHERE job_name = ? AND started IS NOT NULL ORDER BY id DESC LIMIT ?",
            (job_name, LATEST_JOBS),
        )
    finally:
        queue.close()
    sharing = Counter((job.storage, job.study_name) for job in jobs)
    storages: dict[str | None, object] = {}
    measured, seen = [], set()
    for job in jobs:  # newest first: a retried or extended study is read once, from its newest job
        if (job.storage, job.study_name) in seen:
            continue
        seen.add((job.storage, job.study_name))
        runs = job_runs(job, state, storages, device, alone=sharing[(job.storage, job.study_name)] == 1)
        if runs is not None:
            measured.append(runs)
    return calibrate(job_name, measured)


def job_runs(job: QueuedJob, state: StateDir, storages: dict, device: str, alone: bool) -> JobRuns | None:
    """A job's study and seed studies as runs; None when its storage cannot be read now (a shared
    server down: the new estimate is then calibrated without it)."""
    try:
        if job.storage not in storages:
            from hpod.storage import open_storage

            storages[job.storage] = open_storage(state.storage_url(job.storage), create=False)
        storage = storages[job.storage]
        names = [n for n in optuna.get_all_study_names(storage) if n == job.study_name or is_seed_study(n, job)]
        studies = [optuna.load_study(study_name=name, storage=storage) for name in names]
    except HpodError as exc:
        log.debug("%s: not read for the calibration: %s", job.study_name, exc)
        return None
    held = job.run_s if alone and job.state == JobState.DONE else None
    estimate = job.estimate
    timed = estimate.timed if estimate is not None and same_device(estimate.device, device) else {}
    return JobRuns(finished_runs(studies, host_name(), device), timed, data_shape(job.spec.data), held)


def is_seed_study(name: str, job: QueuedJob) -> bool:
    return name.startswith(seed_study_prefix(job.study_name))
