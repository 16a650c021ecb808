"""`hpod plan --hours H`: what of the queue fits in the given hours at the measured speeds, in the
order the daemon will claim it, so that a user can size the night's queue. A job's time per run
(trial or seed run) is, best first: its finished trials' mean, its running trial's measured step
time × planned steps, or the estimate timed at enqueue."""

from __future__ import annotations

import json
import math

from hpod.job import parse_job


def run_seconds(row: dict) -> float | None:
    """Seconds per trial of the job at the speed measured so far; None when nothing is known."""
    if row["trials_finished"] and row["run_s"]:
        return row["run_s"] / row["trials_finished"]
    if None not in (row["step_s"], row["epoch_steps"], row["trial_epochs"]):
        return row["step_s"] * row["epoch_steps"] * row["trial_epochs"]
    if row["estimate"] is not None:
        low, high = json.loads(row["estimate"])["trial_s"]
        return math.sqrt(low * high)
    return None


def runs_left(row: dict) -> int:
    """Trials to the target, then the seed runs of the best."""
    seeds = parse_job(row["job_text"], source=row["study_name"]).search.final_seeds
    return max(0, row["n_trials"] - row["trials_finished"]) + seeds


def plan_queue(rows: list[dict], hours: float) -> list[dict]:
    """Each job in claim order: its time left, when it would finish, and the runs that fit in
    `hours` (all of them, some, or none once an earlier job has used the time)."""
    budget, clock, planned = hours * 3600, 0.0, []
    for row in rows:
        per_run, left = run_seconds(row), runs_left(row)
        total = None if per_run is None else per_run * left
        fits = 0 if per_run is None else min(left, max(0, math.floor((budget - clock) / per_run)))
        finishes = None if total is None or clock + total > budget else clock + total
        planned.append(
            {
                "id": row["id"],
                "study": row["study_name"],
                "state": row["state"],
                "run_s": per_run,
                "runs_left": left,
                "left_s": total,
                "runs_in_window": fits,
                "finishes_after_s": finishes,
            }
        )
        if per_run is not None:
            clock += fits * per_run
    return planned
