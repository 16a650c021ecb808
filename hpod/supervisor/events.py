"""The user's event command (`hpod daemon --on-event CMD`, and a job file's `on_event` where the
daemon allows it): run when a job ends (done, failed, cancelled) or the guard pauses its trial,
with the job's id, study, state and best loss in its environment, as pueue's callbacks are. It
runs in a thread of its own, so a slow command never holds up the trials; its failure is logged,
never fatal."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading

from hpod.errors import HpodError
from hpod.supervisor.rows import QueuedJob

log = logging.getLogger(__name__)
EVENT_TIMEOUT_S = 120


def job_commands(job: QueuedJob, default: str | None, allow_job: bool) -> list[str]:
    """The daemon's command, and the job file's `on_event` only where the daemon's operator allows
    job files to run commands (`hpod daemon --allow-job-commands`): a job file is data, and one
    from a colleague must not run a shell command on this machine unasked."""
    try:
        own = job.spec.on_event
    except HpodError:  # a job whose file no longer parses still gets the daemon's command
        own = None
    if own is not None and not allow_job:
        log.warning("job %s: its job file's on_event is not run (the daemon lacks --allow-job-commands)", job.id)
    return [c for c in (default, own if allow_job else None) if c]


def event_env(job: QueuedJob, state: str, reason: str | None) -> dict[str, str]:
    best = job.best_value
    return {
        "HPOD_JOB_ID": str(job.id),
        "HPOD_STUDY": job.study_name,
        "HPOD_STATE": str(state),
        "HPOD_BEST_LOSS": "" if best is None else repr(best),
        "HPOD_REASON": reason or "",
    }


def run_command(command: str, env: dict[str, str], timeout_s: float = EVENT_TIMEOUT_S) -> int | None:
    """The command's exit status (None when it could not run or timed out), each failure logged.
    It runs in a session of its own, so that at its timeout all it started ends with it."""
    try:
        process = subprocess.Popen(
            command, shell=True, env=os.environ | env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        log.warning("event command for job %s (%s) did not run: %s", env["HPOD_JOB_ID"], env["HPOD_STATE"], exc)
        return None
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        log.warning("event command for job %s (%s) killed after %g s", env["HPOD_JOB_ID"], env["HPOD_STATE"], timeout_s)
        return None
    if process.returncode != 0:
        detail = (err or out).strip().splitlines()[-1:] or [""]
        log.warning(
            "event command for job %s (%s) exited %d: %s",
            env["HPOD_JOB_ID"], env["HPOD_STATE"], process.returncode, detail[0][:200],
        )  # fmt: skip
    return process.returncode


def announce(commands: list[str], job: QueuedJob, state: str, reason: str | None = None) -> None:
    """Run the event commands for this job and state in the background."""
    for command in commands:
        thread = threading.Thread(target=run_command, args=(command, event_env(job, state, reason)), name="event")
        thread.start()  # not a daemon thread: a daemon exiting waits for its last event to be told
