"""`hpod import`: prior trials into a queued job's study, and its row brought up to date."""

from __future__ import annotations

from pathlib import Path

from hpod.errors import HpodError
from hpod.results.importer import import_trials, load_candidates, summary
from hpod.state import StateDir
from hpod.storage import open_storage
from hpod.study.plan import best_trial, finished_count, open_study
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import JobState
from hpod.trial.grid import Arch


def import_into_job(state: StateDir, job_id: int, paths: list[Path], exclude: set[str]) -> list[str]:
    """Prior trials into a queued job's study (`hpod import`); returns the summary lines. Every
    file is checked before the study is opened, so a refusal writes nothing."""
    queue = Queue.existing(state)
    job = queue.job(job_id)
    if job.state == JobState.RUNNING:  # its workers count toward the target too: trials could pass it
        raise HpodError(
            f"job {job_id} is running: `hpod pause {job_id}`, import, then `hpod resume {job_id}` "
            "(trials added under a running search could take it past its target)"
        )
    plan = job.plan
    for key in exclude:
        Arch.from_key(key)
    candidates = load_candidates(paths)
    study = open_study(plan, open_storage(state.storage_url(job.storage)))
    outcome = import_trials(study, plan, candidates, exclude)
    best = best_trial(study)
    arch = None if best is None else best.params["arch"]
    queue.refresh_summary(job_id, finished_count(study), None if best is None else best.value, arch)
    return summary(outcome)
