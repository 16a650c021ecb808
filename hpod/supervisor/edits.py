"""A person's changes to jobs no daemon holds: retry, edit, remove and clean.

Each is one `BEGIN IMMEDIATE` transaction that reads the job's state and writes only if the
state allows it, so it cannot interleave with a claim: a job a daemon claims first is running
by the time the check reads it, and is refused. Studies are never touched here; deleting them
is the caller's, after the jobs have left the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpod.errors import HpodError
from hpod.supervisor.queue import Queue, active_job
from hpod.supervisor.rows import ENDED, JobState, QueuedJob

RETRIED = (JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED)
EDITABLE = (JobState.QUEUED, JobState.PAUSED, JobState.INTERRUPTED)
# A retried job starts a fresh record of its failures; its study, settings and run time stay.
FRESH = "state = 'queued', control = NULL, finished = NULL, last_error = NULL, crashes = 0, waiting = NULL"


@dataclass(frozen=True)
class Edit:
    """New settings for a job; None leaves one as it is."""

    priority: int | None = None
    trials: int | None = None
    timeout_s: float | None = None

    @property
    def empty(self) -> bool:
        return self.priority is None and self.trials is None and self.timeout_s is None


def held(queue: Queue, job_id: int) -> QueuedJob:
    """The job, read inside the caller's transaction."""
    job = queue.job(job_id)
    if job.state == JobState.RUNNING:
        raise HpodError(f"job {job_id} is running: `hpod pause {job_id}` or `hpod cancel {job_id}` first")
    return job


def retry(queue: Queue, job_id: int, trials: int | None = None) -> QueuedJob:
    """A failed, cancelled or interrupted job back to the queue with its settings, to resume its
    study; a done one only with more trials than it has, to extend its study."""
    with queue.transaction() as conn:
        job = held(queue, job_id)
        target = job.target if trials is None else trials
        if job.state == JobState.DONE and target <= job.trials_finished:
            raise HpodError(
                f"job {job_id} is done with {job.trials_finished} trials: "
                f"`hpod retry {job_id} --trials N` with N above {job.trials_finished} extends its study"
            )
        if job.state not in (*RETRIED, JobState.DONE):
            raise HpodError(
                f"job {job_id} is {job.state}: only a done, failed, cancelled or interrupted job is retried"
            )
        if (other := active_job(conn, job.study_name, job.storage, job_id)) is not None:
            raise HpodError(f"study {job.study_name} is already {other[1]} as job {other[0]}")
        conn.execute(f"UPDATE jobs SET {FRESH}, n_trials = ? WHERE id = ?", (target, job_id))
    return queue.job(job_id)


def edit(queue: Queue, job_id: int, change: Edit) -> QueuedJob:
    """New priority, trials or timeout for a job that is queued, paused or interrupted."""
    if change.empty:
        raise HpodError("nothing to change: give --priority, --trials or --timeout")
    with queue.transaction() as conn:
        job = held(queue, job_id)
        if job.state not in EDITABLE:
            raise HpodError(f"job {job_id} is {job.state}: `hpod retry {job_id}` puts it back in the queue first")
        conn.execute(
            "UPDATE jobs SET priority = coalesce(?, priority), n_trials = coalesce(?, n_trials), "
            "timeout_s = coalesce(?, timeout_s) WHERE id = ?",
            (change.priority, change.trials, change.timeout_s, job_id),
        )
    return queue.job(job_id)


def remove(queue: Queue, job_ids: list[int]) -> list[QueuedJob]:
    """Take jobs out of the queue, all or none; a running one is refused. Jobs waiting for a
    removed one no longer wait."""
    with queue.transaction() as conn:
        jobs = [held(queue, job_id) for job_id in dict.fromkeys(job_ids)]
        delete(conn, [job.id for job in jobs])
    return jobs


def clean(queue: Queue) -> list[QueuedJob]:
    """Every ended job (done, failed, cancelled) out of the queue."""
    with queue.transaction() as conn:
        jobs = [job for job in queue.jobs() if job.state in ENDED]
        delete(conn, [job.id for job in jobs])
    return jobs


def delete(conn, ids: list[int]) -> None:
    marks = ", ".join("?" * len(ids))
    conn.execute(f"UPDATE jobs SET after_job = NULL WHERE after_job IN ({marks})", ids)
    conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids)
