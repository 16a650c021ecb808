"""A trial's worker process, driven through the daemon's handle: the task line in, reports out,
commands between steps, and the exit status the daemon reads."""

from __future__ import annotations

import dataclasses
import time

from hpod.supervisor.handle import EXITING_POLL_S, TrialProcess, describe_exit
from hpod.supervisor.messages import Command, Outcome, Phase, Report, ReportKind, Task
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import QueuedJob
from hpod.supervisor.slots import Slot
from tests.helpers import hpod, write_job


def queued_job(tmp_path, epochs: int) -> tuple[QueuedJob, str]:
    state = tmp_path / "state"
    queued = hpod(state, "enqueue", "--budget", "20K", "--horizon", "h1", "--job", write_job(tmp_path, epochs))
    assert queued.returncode == 0, queued.stderr
    return Queue(state / "queue.db").job(1), str(state)


def task(job: QueuedJob, state: str) -> Task:
    return Task(job, state, Phase.SEARCH, Slot(0, None, None, 1.0))


def drain(worker: TrialProcess, seconds: float, waits: list[float] | None = None) -> tuple[list[Report], int]:
    """The worker's reports and exit code; `waits` gets the seconds each wait for reports took."""
    reports, deadline = [], time.monotonic() + seconds
    while worker.alive() and time.monotonic() < deadline:
        began = time.monotonic()
        reports += worker.reports(timeout=0.5)
        if waits is not None:
            waits.append(time.monotonic() - began)
    code, rest = worker.finish()
    return [*reports, *rest], code


def test_a_worker_runs_one_trial_and_reports_its_start_epochs_and_end(tmp_path):
    waits: list[float] = []
    reports, code = drain(TrialProcess(task(*queued_job(tmp_path, epochs=1))), 120, waits)
    kinds = [r.kind for r in reports]
    instant = [w for w in waits if w < EXITING_POLL_S / 2]
    assert len(instant) <= len(reports), len(instant)  # no wait returns at once but for a report (no busy loop)
    assert kinds[0] == ReportKind.STARTED and ReportKind.EPOCH in kinds
    assert reports[-1] == Report(ReportKind.FINISHED, trial=0, outcome=Outcome.COMPLETE) and code == 0


def test_a_stop_command_ends_the_trial_at_a_step_and_leaves_it_to_resume(tmp_path):
    worker = TrialProcess(task(*queued_job(tmp_path, epochs=30)))
    while not any(r.kind == ReportKind.EPOCH for r in worker.reports(timeout=0.5)):
        assert worker.alive()
    worker.send(Command.STOP)
    reports, code = drain(worker, 60)
    assert Report(ReportKind.INTERRUPTED, trial=0) in reports and code == 0


def test_a_job_the_worker_cannot_open_is_an_error_report_and_exit_2(tmp_path):
    job, state = queued_job(tmp_path, epochs=1)
    reports, code = drain(TrialProcess(task(dataclasses.replace(job, job_text="grid: {tolerance: 7}"), state)), 60)
    assert reports[-1].kind == ReportKind.ERROR and "grid.tolerance" in reports[-1].reason
    assert code == 2


def test_a_sigkill_is_called_the_oom_killers_only_when_the_kernel_counted_one():
    assert describe_exit(-9, 2**30, 0) == "worker killed by signal 9 (SIGKILL), peak RSS 1.00 GiB"
    assert describe_exit(-9, 2**30, None).startswith("worker killed by signal 9 (SIGKILL), ")
    assert "OOM killer ended 1 process(es)" in describe_exit(-9, 2**30, 1)
    assert "OOM" not in describe_exit(-15, 2**30, 3)  # only SIGKILL is the OOM killer's
