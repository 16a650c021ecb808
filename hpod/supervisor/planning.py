"""`hpod plan --hours H`: what of the queue fits in the given hours at the measured speeds, in the
order the daemon will claim it, so that a user can size the night's queue. A job's time per run
(trial or seed run) is, best first: its finished trials' mean, its running trial's measured step
time × planned steps, or the estimate made at enqueue (calibrated with the job file's earlier
runs here); its time left is `time_left`, the same figure `hpod status` shows as its ETA."""

from __future__ import annotations

import math

from hpod.supervisor.rows import QueuedJob


def run_seconds(job: QueuedJob) -> float | None:
    """Seconds per run (search trial or seed run) at the speed measured so far; None when
    nothing is known."""
    finished = job.trials_finished + job.seeds_finished
    if finished and job.run_s:
        return job.run_s / finished
    if None not in (job.step_s, job.epoch_steps, job.trial_epochs):
        return job.step_s * job.epoch_steps * job.trial_epochs
    return None if job.estimate is None else job.estimate.expected_run_s


def runs_left(job: QueuedJob) -> int:
    """Trials to the target, then the seed runs of the best not yet finished."""
    seeds = job.spec.search.final_seeds
    return max(0, job.target - job.trials_finished) + max(0, seeds - job.seeds_finished)


def time_left(job: QueuedJob) -> float | None:
    """The job's time left, search and seed runs: the running run's remainder (its measured
    steps taken off a run's time), then a run's time for each run after it. `hpod status`'s
    ETA and `hpod plan`'s time left are this one figure. The evaluation, one pass over val and
    test, is not counted."""
    per_run, left = run_seconds(job), runs_left(job)
    if per_run is None:
        return None
    if not left or job.current_trial is None or None in (job.step_s, job.epoch_steps):
        return per_run * left
    ran = ((job.current_epoch or 0) * job.epoch_steps + (job.current_step or 0)) * job.step_s
    return max(0.0, per_run - ran) + per_run * (left - 1)


def plan_queue(jobs: list[QueuedJob], hours: float) -> list[dict]:
    """Each job in claim order: its time left, when it would finish, and the runs that fit in
    `hours` (all of them, some, or none once an earlier job has used the time)."""
    budget, clock, planned = hours * 3600, 0.0, []
    for job in jobs:
        per_run, left, total = run_seconds(job), runs_left(job), time_left(job)
        fits = 0 if per_run is None else min(left, max(0, math.floor((budget - clock) / per_run)))
        finishes = None if total is None or clock + total > budget else clock + total
        planned.append(
            {
                "id": job.id,
                "study": job.study_name,
                "state": job.state,
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
