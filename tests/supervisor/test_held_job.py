"""The phase machine of a held job, driven without a daemon or a worker: a real queue and a
real study, with trials added to the study and workers' outcomes handed to it as the daemon
would."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from hpod.job import load_job
from hpod.results.report import cells
from hpod.state import StateDir
from hpod.storage import open_storage
from hpod.supervisor.enqueue import prepare_jobs
from hpod.supervisor.handle import TrialOutcome
from hpod.supervisor.held_job import LOST_LIMIT, HeldJob
from hpod.supervisor.messages import Outcome, Phase
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import Control, JobState
from tests.helpers import write_job


def held(tmp_path, seeds: int = 0, trials: int = 2, timeout_h: float | None = None) -> HeldJob:
    state = StateDir(tmp_path / "state").create()
    job = load_job(write_job(tmp_path, epochs=1, seeds=seeds)).with_overrides(trials=trials)
    queue = Queue(state.queue_db)
    queue.enqueue(prepare_jobs(job, [20_000], [1], timeout_h=timeout_h), force=True)
    held_job = HeldJob(queue.claim("test", 60), state)
    held_job.open()
    return held_job


def finish_trial(study: optuna.Study, value: float) -> None:
    """A finished trial, as a worker leaves it (the machine reads states and values only)."""
    study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))


def test_the_search_runs_to_its_target_then_the_evaluation_ends_the_job(tmp_path):
    job = held(tmp_path)
    assert job.phase == Phase.SEARCH and job.next_task() == (Phase.SEARCH, None)
    finish_trial(job.study, 0.5)
    job.check(False, None, run_s=0)
    assert job.ending is None and job.next_task() == (Phase.SEARCH, None)
    finish_trial(job.study, 0.4)
    job.check(False, None, run_s=0)
    assert job.phase == Phase.EVALUATE and job.next_task() == (Phase.EVALUATE, None)
    assert job.result() is None  # not ended until the evaluation has run
    job.record(TrialOutcome(None, Outcome.EVALUATED))
    assert job.phase == Phase.ENDED and job.result() == (JobState.DONE, None)


def test_the_seed_runs_follow_the_search_with_their_own_target(tmp_path):
    job = held(tmp_path, seeds=2, trials=1)
    finish_trial(job.study, 0.5)
    job.check(False, None, run_s=0)
    assert job.phase == Phase.SEEDS and job.target == 2 and job.next_task() == (Phase.SEEDS, None)
    assert job.study is not job.search


def test_a_run_of_failed_trials_fails_the_job_and_a_success_resets_the_count(tmp_path):
    job = held(tmp_path, trials=50)
    limit = job.plan.job.search.max_failures
    for _ in range(limit - 1):
        job.record(TrialOutcome(1, Outcome.FAIL, "diverged"))
    job.record(TrialOutcome(2, Outcome.COMPLETE))
    for _ in range(limit - 1):
        job.record(TrialOutcome(3, Outcome.FAIL, "diverged"))
    assert job.ending is None
    job.record(TrialOutcome(4, Outcome.FAIL, "diverged"))
    state, note = job.result()
    assert state == JobState.FAILED and f"{limit} trials in a row failed (last: diverged)" in note


def test_workers_dying_before_their_trial_fail_the_job_only_in_a_run(tmp_path):
    job = held(tmp_path)
    for _ in range(LOST_LIMIT - 1):
        job.record(TrialOutcome(None, Outcome.LOST, "killed at start-up"))
    job.record(TrialOutcome(0, Outcome.COMPLETE))
    assert job.lost == 0 and job.ending is None
    for _ in range(LOST_LIMIT):
        job.record(TrialOutcome(None, Outcome.LOST, "killed at start-up"))
    assert job.result()[0] == JobState.FAILED


@pytest.mark.parametrize(
    ("stopping", "control", "ended"),
    [
        (True, None, JobState.INTERRUPTED),
        (False, Control.PAUSE, JobState.PAUSED),
        (False, Control.CANCEL, JobState.CANCELLED),
    ],
)
def test_a_stop_or_a_persons_control_ends_the_hold_between_trials(tmp_path, stopping, control, ended):
    job = held(tmp_path)
    job.check(stopping, control, run_s=0)
    assert job.next_task() is None and job.result() == (ended, None)


def test_the_timeout_ends_the_search_with_a_note_and_still_evaluates(tmp_path):
    job = held(tmp_path, trials=5, timeout_h=1)
    finish_trial(job.study, 0.5)
    job.check(False, None, run_s=3599)
    assert job.phase == Phase.SEARCH
    job.check(False, None, run_s=3600)
    assert job.phase == Phase.EVALUATE
    job.record(TrialOutcome(None, Outcome.EVALUATED))
    state, note = job.result()
    assert state == JobState.DONE and note.startswith("timed out after 1 h with 1/5 trials")


def test_a_surplus_or_interrupted_trial_counts_neither_way(tmp_path):
    job = held(tmp_path)
    job.failures = 2
    for outcome in (Outcome.SURPLUS, Outcome.INTERRUPTED):
        job.record(TrialOutcome(0, outcome))
    assert job.failures == 2 and job.ending is None


def test_a_study_re_enqueued_with_another_target_is_judged_against_it(tmp_path):
    first = held(tmp_path, trials=2)
    finish_trial(first.study, 0.5)
    second = dataclasses.replace(first.queued, n_trials=3)
    job = HeldJob(second, first.state)
    job.open()
    assert job.target == 3 and job.study.user_attrs["n_trials"] == 3
    [cell] = cells(open_storage(first.state.storage_url()))
    assert cell.target == 3  # the report's "incomplete" counts to the target the daemon works to
