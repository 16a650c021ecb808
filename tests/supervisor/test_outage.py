"""A storage that goes away is waited out: a real PostgreSQL server stopped as a crash would
(`pg_ctl stop -m immediate`) under two daemons sharing one study, then started again (which
also covers two hosts sharing a study: test_hosts.py's test of that alone is marked slow); a
SQLite file locked past its timeout; a tmpfs filled during a trial."""

import os
import sqlite3
import subprocess
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from hpod.records import SURPLUS, WORKER
from hpod.storage import StorageUnreachable, is_unreachable, open_storage
from hpod.supervisor.outage import Outage, Patient, root_error
from tests.helpers import enqueue, finish, hpod, log_lines, start_daemon, status, wait_for, write_job
from tests.postgres import Cluster

STUDY = "daemon-20K-h1"


@pytest.fixture
def server():
    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def daemons():
    """The test's daemons; any left running by a failed assertion is killed with its workers."""
    started: list[subprocess.Popen] = []
    yield started
    for daemon in started:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    """The shared study's trials; none before a daemon has created it."""
    storage = open_storage(url)
    if STUDY not in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
        return []
    return optuna.load_study(study_name=STUDY, storage=storage).trials


def test_two_daemons_wait_out_a_postgresql_restart_and_finish_the_study_at_its_target(tmp_path, server, daemons):
    url = server.new_database()
    job_file = write_job(tmp_path, epochs=4)
    states = {name: tmp_path / name for name in ("alpha", "beta")}
    for state in states.values():
        enqueue(state, job_file, "--storage", url, "--trials", "2")
    daemons.extend(start_daemon(state, "--host", name, "--until-idle") for name, state in states.items())
    wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials(url)), what="training")
    server.halt()
    time.sleep(8)  # both daemons and their workers meet the outage, and keep meeting it
    assert all(daemon.poll() is None for daemon in daemons), "a daemon gave up on the storage"
    shown = hpod(states["alpha"], "status")  # the local jobs, and a line for the storage that is away
    assert shown.returncode == 0, shown.stderr
    assert "unreachable" in shown.stdout and "running" in shown.stdout
    [job] = status(states["alpha"])["jobs"]
    assert job["state"] == "running"
    server.serve()
    outputs = [finish(daemon, timeout=600) for daemon in daemons]
    found = trials(url)
    assert [t.number for t in found] == list(range(len(found)))
    complete = [t for t in found if t.state == TrialState.COMPLETE]
    assert len(complete) == 2, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in found]
    assert all(t.user_attrs.get(SURPLUS) for t in found if t.state != TrialState.COMPLETE)
    assert not any(t.state == TrialState.RUNNING for t in found)
    assert {t.user_attrs[WORKER].rsplit(":", 2)[0] for t in complete} == {"alpha", "beta"}  # both took part
    assert len({(t.params["arch"], t.params["dropout"]) for t in complete}) == 2  # and drew apart
    for state in states.values():
        [job] = status(state)["jobs"]
        assert job["state"] == "done" and job["trials_finished"] == 2, job
    said = "\n".join(outputs)
    assert "unreachable since" in said and "reachable again" in said, said[-3000:]
    assert not any("failed" in line for line in log_lines(states["alpha"] / "logs" / f"{STUDY}.log")), "a trial failed"


@pytest.mark.slow  # 44 s on CI's 2 cores; waiting out an outage stays in `make test` (the PostgreSQL restart)
def test_local_jobs_run_while_a_shared_storage_is_away_which_fails_its_job_only_past_the_limit(tmp_path, server):
    url = server.new_database()
    state, job_file = tmp_path / "state", write_job(tmp_path, epochs=1)
    enqueue(state, job_file, "--storage", url, "--no-estimate")
    enqueue(state, job_file, "--budget", "30K", "--no-estimate")  # local: the queue's SQLite storage
    server.halt()
    out = finish(start_daemon(state, "--until-idle", "--outage-limit", "20"), timeout=300)
    shared, local = status(state)["jobs"]
    assert local["state"] == "done" and local["trials_finished"] == 2, local
    assert shared["state"] == "failed" and "unreachable since" in shared["last_error"], shared
    assert "past the limit of 20 s" in shared["last_error"] and "\n" not in shared["last_error"]
    assert "StorageInternalError" not in out and "exceeding max length" not in out


def locked_sqlite(path) -> sqlite3.Connection:
    """A connection holding SQLite's write lock on `path` until it commits."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_only_errors_of_a_storage_that_is_away_are_waited_out(tmp_path):
    path = tmp_path / "optuna.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 0.05}})
    study = optuna.create_study(storage=storage, study_name="s")
    holder = locked_sqlite(path)
    with pytest.raises(Exception) as locked:
        study.set_user_attr("a", 1)
    holder.rollback()
    with pytest.raises(Exception) as missing_table:
        sqlite3.connect(path).execute("SELECT * FROM no_such_table")
    with pytest.raises(Exception) as refused:
        open_storage(f"postgresql+psycopg://postgres@/nothing?host={tmp_path}")
    assert is_unreachable(locked.value) and "locked" in root_error(locked.value)
    assert "max length" not in root_error(locked.value)  # Optuna's wrapper blames the data
    assert not is_unreachable(missing_table.value)
    assert isinstance(refused.value, StorageUnreachable) and is_unreachable(refused.value)
    assert not is_unreachable(KeyError("Record does not exist."))


def test_a_patient_storage_waits_for_a_writer_to_let_go_and_says_when_it_waited_and_when_it_was_back(tmp_path):
    path = tmp_path / "optuna.db"
    inner = optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 0.05}})
    said: list[str | None] = []
    outage = Outage.of_storage(f"sqlite:///{path}", limit_s=60, on_change=said.append)
    study = optuna.create_study(storage=Patient(optuna.storages.get_storage(inner), outage), study_name="s")
    holder = locked_sqlite(path)
    threading.Timer(2.0, holder.rollback).start()
    began = time.monotonic()
    study.set_user_attr("kept", 7)
    assert time.monotonic() - began >= 1.9  # it waited for the lock rather than failing
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{path}").user_attrs == {"kept": 7}
    assert len(said) == 2 and "unreachable since" in said[0] and "locked" in said[0] and said[1] is None
    assert outage.since is None


def test_past_its_limit_an_outage_fails_at_once_and_names_the_storage(tmp_path):
    outage = Outage.of_storage("postgresql+psycopg://hpod:s3cret@db/hpod", limit_s=0.5)
    calls = []

    def away():
        calls.append(time.monotonic())
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(StorageUnreachable) as gone:
        outage.call(away)
    assert len(calls) >= 2 and "past the limit of 0.5 s" in str(gone.value) and "s3cret" not in str(gone.value)
    with pytest.raises(ValueError):  # not an outage: raised at once, never retried
        outage.call(lambda: int("x"))


def fill(path) -> None:
    """Write `path` until the file system holding it is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_disk_filled_during_a_trial_pauses_the_daemon_which_resumes_once_there_is_space(tmp_path, daemons):
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(state)], check=True)
    try:
        job_file = write_job(tmp_path, epochs=8)
        enqueue(state, job_file, "--no-estimate", "--trials", "1")
        daemons.append(start_daemon(state, "--until-idle"))
        local = f"sqlite:///{state / 'optuna.db'}"
        wait_for(lambda: any(t.intermediate_values for t in trials(local)), what="an epoch")
        fill(state / "filler")
        time.sleep(10)  # epochs end meanwhile: checkpoints, the study and the queue all wait to be written
        assert daemons[0].poll() is None, "the daemon died of the full disk"
        shown = hpod(state, "status")
        assert shown.returncode == 0 and "disk full" in shown.stdout, shown.stdout + shown.stderr
        refused = hpod(state, "enqueue", "--budget", "40K", "--horizon", "h1", "--job", job_file, "--no-estimate")
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "disk is full" in refused.stderr
        (state / "filler").unlink()
        out = finish(daemons[0], timeout=300)
        [trial] = trials(local)
        assert trial.state == TrialState.COMPLETE, trial.user_attrs
        [job] = status(state)["jobs"]
        assert job["state"] == "done", job
        assert "disk full" in out or "disk is full" in out, out[-3000:]
    finally:
        for daemon in daemons:
            daemon.kill()
        subprocess.run(["umount", "-l", str(state)], check=False)
