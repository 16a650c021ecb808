"""The daemon's and the worker's messages survive their one encoding (a JSON line) unchanged,
and the typed job a task carries is the queue's own, decoded once."""

from __future__ import annotations

import pytest

from hpod.supervisor.messages import Outcome, Phase, Report, ReportKind, Task
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import Control, JobState, QueuedJob
from hpod.supervisor.slots import Slot
from tests.helpers import hpod, write_job


@pytest.fixture(scope="module")
def queued(tmp_path_factory) -> QueuedJob:
    folder = tmp_path_factory.mktemp("messages")
    state = folder / "state"
    done = hpod(state, "enqueue", "--budget", "20K", "--horizon", "h1", "--job", write_job(folder, 1))
    assert done.returncode == 0, done.stderr
    return Queue(state / "queue.db").job(1)


def test_a_task_crosses_the_pipe_unchanged_estimate_and_all(queued):
    sent = Task(queued, "/state", Phase.SEEDS, Slot(3, "cpu", 2, 0.5), resume=4, target=7, guard=("cpu_temp_c=80",))
    received = Task.decode(sent.encode())
    assert received == sent and received.job.estimate is not None and received.job.state is JobState.QUEUED


@pytest.mark.parametrize(
    "report",
    [
        Report(ReportKind.STARTED, trial=0),
        Report(ReportKind.SETUP, trial=0, epochs=3, steps=12),
        Report(ReportKind.STEP, trial=1, epoch=2, step=-1),
        Report(ReportKind.EPOCH, trial=1, epoch=0, val_loss=0.0),
        Report(ReportKind.PAUSED, reason="storage away", since=1.5),
        Report(ReportKind.FINISHED, trial=2, outcome=Outcome.FAIL, reason="out of memory"),
        Report(ReportKind.FINISHED, outcome=Outcome.EVALUATED),
        Report(ReportKind.ERROR, reason="grid.tolerance must be < 1"),
    ],
    ids=lambda report: report.kind,
)
def test_every_report_kind_crosses_the_pipe_unchanged(report):
    assert Report.decode(report.encode()) == report


def test_a_queued_job_is_its_row_again_and_a_control_names_its_state(queued):
    assert QueuedJob.from_row(queued.to_row()) == queued
    assert (Control.PAUSE.state, Control.CANCEL.state) == (JobState.PAUSED, JobState.CANCELLED)
    assert queued.spec.search.n_trials == queued.target  # the override is the job's one target
