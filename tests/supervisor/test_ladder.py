"""A budget ladder run as a person runs it: queued as one, run by the daemon rung after rung, the
upper rung warm-started from the lower one, and resumable after kill -9 like any study."""

import sqlite3

import pytest
from optuna.trial import TrialState

from hpod.records import TRANSFER, TRANSFERRED_FROM
from tests.helpers import (
    enqueue,
    finish,
    hpod,
    process_gone,
    running_worker,
    start_daemon,
    status,
    study,
    wait_for,
    write_job,
)

LOWER, UPPER = "daemon-20K-h1", "daemon-30K-h1"


def ladder(state, tmp_path, epochs: int) -> list[int]:
    """Queue 20K and 30K as one ladder of a job without forced extremes: the upper rung's first
    trial is the one carried from the rung below."""
    return enqueue(state, write_job(tmp_path, epochs=epochs), "--budget", "20K,30K", "--trials", "1")


def transferred(state) -> list:
    return [t for t in study(state, UPPER).trials if TRANSFERRED_FROM in t.user_attrs]


def test_a_ladder_runs_rung_after_rung_and_the_upper_rung_starts_from_the_lower_ones_best(state, tmp_path):
    lower, upper = ladder(state, tmp_path, epochs=1)
    jobs = {j["id"]: j for j in status(state)["jobs"]}
    assert jobs[upper]["waits_for"] == lower and jobs[lower]["waits_for"] is None
    finish(start_daemon(state, "--until-idle"))

    with sqlite3.connect(state / "queue.db") as db:
        started = dict(db.execute("SELECT id, started FROM jobs").fetchall())
    best = study(state, LOWER).best_trial
    assert best.datetime_complete.timestamp() <= started[upper]  # claimed once the search below ended
    carried = transferred(state)
    assert [t.user_attrs[TRANSFERRED_FROM] for t in carried] == [f"{LOWER}#{best.number}"]
    assert carried[0].number == 0 and carried[0].state == TrialState.COMPLETE
    assert study(state, UPPER).user_attrs[TRANSFER]["sources"] == [LOWER]
    assert {j["state"] for j in status(state)["jobs"]} == {"done"}
    told = f"warm-started from {LOWER}#{best.number}; best trial #0 is {LOWER}#{best.number}'s"
    assert told in " ".join(hpod(state, "show", UPPER, "--wide").stdout.split())
    assert f"30K h1: {told}" in " ".join(hpod(state, "report", "--wide").stdout.split())


@pytest.mark.slow  # a crash test (51 s on CI's 2 cores); the ladder's run rung after rung stays in `make test`
def test_a_warm_started_study_killed_with_sigkill_resumes_its_transferred_trial_once(state, tmp_path):
    ladder(state, tmp_path, epochs=12)
    daemon = start_daemon(state)
    found = wait_for(lambda: running_worker(state, UPPER), timeout=240, what="the upper rung's first trial")
    assert found[0] == transferred(state)[0].number  # killed inside the carried trial
    daemon.kill()
    daemon.wait()
    wait_for(lambda: process_gone(found[1]), timeout=10, what="the orphaned worker to exit")
    finish(start_daemon(state, "--until-idle"))

    trials = study(state, UPPER).trials
    carried = transferred(state)
    assert len(carried) == 1 and carried[0].state == TrialState.COMPLETE  # not enqueued again on reopening
    assert [t.state for t in trials] == [TrialState.COMPLETE] and carried[0].number == found[0]
    assert any(r["epoch"] > 0 for r in carried[0].user_attrs.get("resumed_from", []))
    assert [j["state"] for j in status(state)["jobs"]] == ["done", "done"]
