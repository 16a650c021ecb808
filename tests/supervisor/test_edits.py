"""retry, edit, remove and clean against a real queue, and through the CLI against a real daemon
and real studies."""

import multiprocessing
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from hpod.errors import HpodError
from hpod.supervisor.edits import Edit, clean, edit, remove, retry
from hpod.supervisor.queue import Queue
from tests.helpers import enqueue, finish, hpod, job_field, start_daemon, study, wait_for, write_job
from tests.supervisor.test_queue import job

STUDY = "daemon-20K-h1"


@pytest.fixture
def queue(tmp_path) -> Queue:
    return Queue(tmp_path / "queue.db")


def test_retry_puts_an_ended_job_back_and_refuses_a_done_one_without_more_trials(queue):
    failed, cancelled, done = queue.enqueue([job("a"), job("b"), job("c")])
    queue.claim("d", 60)
    queue.release(failed, "d", "failed", "boom")
    queue.request(cancelled, "cancel")
    queue.claim("d", 60)
    queue.record_progress(done, "d", trials_finished=2)
    queue.release(done, "d", "done")
    again = retry(queue, failed)
    assert (again.state, again.last_error, again.finished, again.target) == ("queued", None, None, 2)
    assert retry(queue, cancelled).state == "queued"
    with pytest.raises(HpodError, match="done with 2 trials"):
        retry(queue, done)
    with pytest.raises(HpodError, match="is queued"):
        retry(queue, failed)
    assert retry(queue, done, trials=5).target == 5


def test_retry_refuses_a_study_another_job_has_in_the_queue(queue):
    first = queue.enqueue([job("a")])[0]
    queue.request(first, "cancel")
    second = queue.enqueue([job("a")])[0]
    with pytest.raises(HpodError, match=f"already queued as job {second}"):
        retry(queue, first)


def test_edit_changes_what_the_claim_reads_and_refuses_a_running_or_ended_job(queue):
    low, high = queue.enqueue([job("low"), job("high", priority=5)])
    edited = edit(queue, low, Edit(priority=9, trials=7, timeout_s=3600.0))
    assert (edited.priority, edited.target, edited.timeout_s) == (9, 7, 3600.0)
    assert queue.claim("d", 60).id == low
    with pytest.raises(HpodError, match="running"):
        edit(queue, low, Edit(priority=1))
    queue.release(low, "d", "done")
    with pytest.raises(HpodError, match="is done"):
        edit(queue, low, Edit(trials=9))
    with pytest.raises(HpodError, match="nothing to change"):
        edit(queue, high, Edit())
    assert queue.job(high).priority == 5


def test_remove_is_all_or_none_refuses_a_running_job_and_frees_its_waiters(queue):
    first, second = queue.enqueue([job("a"), job("b")])
    waiter = queue.enqueue([job("c")], after=second)[0]
    assert queue.claim("d", 60).id == first
    with pytest.raises(HpodError, match=f"job {first} is running"):
        remove(queue, [second, first])
    assert [j.id for j in queue.jobs()] == [first, second, waiter]  # nothing removed
    assert [j.id for j in remove(queue, [second])] == [second]
    assert queue.waits() == {} and queue.claim("d", 60).id == waiter


def test_clean_removes_ended_jobs_only(queue):
    ids = queue.enqueue([job("a"), job("b"), job("c")])
    queue.request(ids[0], "cancel")
    queue.request(ids[2], "pause")
    assert [j.id for j in clean(queue)] == [ids[0]]
    assert [j.id for j in queue.jobs()] == ids[1:]


def _remove_or_claim(path, which, out):
    queue = Queue(path)
    if which == 0:
        out.put(("claimed", None if (row := queue.claim("d", 60)) is None else row.id))
        return
    try:
        out.put(("removed", [j.id for j in remove(queue, [1])]))
    except HpodError:
        out.put(("removed", []))


def test_a_removal_racing_a_claim_never_removes_the_job_the_daemon_took(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for attempt in range(15):
        path = tmp_path / f"queue-{attempt}.db"
        Queue(path).enqueue([job()])
        out = ctx.Queue()
        processes = [ctx.Process(target=_remove_or_claim, args=(path, which, out)) for which in (0, 1)]
        for p in processes:
            p.start()
        results = dict(out.get(timeout=60) for _ in processes)
        for p in processes:
            p.join(timeout=60)
        assert (results["claimed"] == 1) != (results["removed"] == [1]), results  # exactly one of them won
        assert [j.state for j in Queue(path).jobs()] == ([] if results["removed"] else ["running"])


def test_a_retried_job_resumes_its_study_and_one_extended_runs_more_trials(tmp_path):
    state = tmp_path / "state"
    job_file = write_job(tmp_path, epochs=1)
    enqueue(state, job_file, "--trials", "1")
    finish(start_daemon(state, "--until-idle"))
    first = study(state, STUDY).trials[0]
    again = hpod(state, "enqueue", "--budget", "20K", "--horizon", "h1", "--job", job_file, "--trials", "1")
    assert again.returncode == 0 and again.stdout == "" and f"{STUDY} is already complete (1/1" in again.stderr
    assert job_field(state, "id", 2) is None  # not queued again (nor re-timed)
    refused = hpod(state, "retry", "1")
    assert refused.returncode == 2 and "--trials N with N above 1" in refused.stderr.replace("`", "")
    assert hpod(state, "retry", STUDY, "--trials", "2").returncode == 0  # a study name names its job
    finish(start_daemon(state, "--until-idle"))
    trials = study(state, STUDY).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 and trials[0].params == first.params
    assert job_field(state, "state") == "done" and job_field(state, "n_trials") == 2


def test_a_running_job_is_neither_removed_nor_edited_and_clean_studies_deletes_after_asking(tmp_path):
    state = tmp_path / "state"
    enqueue(state, write_job(tmp_path, epochs=30))
    daemon = start_daemon(state)
    wait_for(lambda: job_field(state, "state") == "running", what="the job to run")
    for command in (("remove", "1"), ("edit", "1", "--priority", "3")):
        result = hpod(state, *command)
        assert result.returncode == 2 and "job 1 is running" in result.stderr, result
    assert hpod(state, "cancel", "1").returncode == 0
    wait_for(lambda: job_field(state, "state") == "cancelled", timeout=120, what="the cancel")
    daemon.terminate()
    daemon.wait(timeout=60)
    storage = optuna.storages.RDBStorage(f"sqlite:///{state / 'optuna.db'}")
    assert (state / "checkpoints" / STUDY).is_dir()
    command = [sys.executable, "-m", "hpod", "clean", "--studies", "--state-dir", str(state)]
    unasked = subprocess.run(command, input="y\n", capture_output=True, text=True, timeout=60)  # not a person
    assert unasked.returncode == 2 and "add --yes" in unasked.stderr and unasked.stderr.count("\n") == 1
    assert job_field(state, "state") == "cancelled" and STUDY in optuna.get_all_study_names(storage)
    assert hpod(state, "clean", "--studies", "--yes").returncode == 0
    assert job_field(state, "state") is None and not (state / "checkpoints" / STUDY).exists()
    assert STUDY not in optuna.get_all_study_names(storage)
