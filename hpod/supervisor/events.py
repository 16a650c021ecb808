"""The user's event command (`hpod daemon --on-event CMD`, or a job file's `on_event`): run when a
job ends (done, failed, cancelled) or the guard pauses its trial, with the job's id, study,
state and best loss in its environment, as pueue's callbacks are. It runs in a thread of its
own, so a slow command never holds up the trials; its failure is logged, never fatal."""

from __future__ import annotations

import logging
import os
import subprocess
import threading

from hpod.errors import HpodError
from hpod.job import parse_job

log = logging.getLogger(__name__)
EVENT_TIMEOUT_S = 120


def job_command(row: dict, default: str | None) -> str | None:
    """The job file's `on_event`, else the daemon's."""
    try:
        return parse_job(row["job_text"], source=row["study_name"]).on_event or default
    except HpodError:  # a job whose file no longer parses still gets the daemon's command
        return default


def event_env(row: dict, state: str, reason: str | None) -> dict[str, str]:
    best = row.get("best_value")
    return {
        "HPOD_JOB_ID": str(row["id"]),
        "HPOD_STUDY": row["study_name"],
        "HPOD_STATE": state,
        "HPOD_BEST_LOSS": "" if best is None else repr(best),
        "HPOD_REASON": reason or "",
    }


def run_command(command: str, env: dict[str, str]) -> int | None:
    """The command's exit status (None when it could not run or timed out), each failure logged."""
    try:
        result = subprocess.run(
            command, shell=True, env=os.environ | env, capture_output=True, text=True, timeout=EVENT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("event command for job %s (%s) did not run: %s", env["HPOD_JOB_ID"], env["HPOD_STATE"], exc)
        return None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        log.warning(
            "event command for job %s (%s) exited %d: %s",
            env["HPOD_JOB_ID"], env["HPOD_STATE"], result.returncode, detail[0][:200],
        )  # fmt: skip
    return result.returncode


def announce(command: str | None, row: dict, state: str, reason: str | None = None) -> None:
    """Run the event command, if there is one, for this job and state in the background."""
    if command:
        thread = threading.Thread(target=run_command, args=(command, event_env(row, state, reason)), name="event")
        thread.start()  # not a daemon thread: a daemon exiting waits for its last event to be told
