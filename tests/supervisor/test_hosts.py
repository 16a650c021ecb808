"""Several hosts on one study in a real PostgreSQL: each host a daemon with its own state
directory and host name, sharing the study through `--storage`."""

import json
import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from hpod.records import BEAT, SURPLUS, WORKER
from hpod.state import StateDir
from hpod.storage import open_storage
from hpod.supervisor.hosts import fail_silent_trials, silent_trials, trials_by_host
from hpod.supervisor.trials import drop_failed_checkpoints, run_trial
from tests.helpers import enqueue, finish, hpod, process_gone, start_daemon, status, wait_for, write_job

STUDY = "daemon-20K-h1"


def enqueue_shared(state, job_file, url, *args):
    enqueue(state, job_file, "--storage", url, *args)


def host(state, name, *args):
    return start_daemon(state, "--host", name, *args)


def shared(url) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=open_storage(url))


def host_of(trial) -> str | None:
    return trial.user_attrs[WORKER].rsplit(":", 2)[0] if WORKER in trial.user_attrs else None


@pytest.mark.slow  # the outage test of test_outage.py checks the same with the server restarted midway
def test_two_hosts_reach_the_target_together_without_doubling_a_trial(tmp_path, postgres_url):
    job_file = write_job(tmp_path, epochs=3)
    states = {name: tmp_path / name for name in ("alpha", "beta")}
    for state in states.values():
        enqueue_shared(state, job_file, postgres_url, "--trials", "6")
    daemons = [host(state, name, "--until-idle") for name, state in states.items()]
    for daemon in daemons:
        finish(daemon)
    trials = shared(postgres_url).trials
    assert [t.number for t in trials] == list(range(len(trials)))  # the storage's numbering has no gap nor double
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    assert all(t.user_attrs.get(SURPLUS) for t in trials if t.state != TrialState.COMPLETE)
    assert {host_of(t) for t in complete} == {"alpha", "beta"}
    assert len({(t.params["arch"], t.params["dropout"]) for t in complete}) == 6  # no two hosts drew alike
    for state in states.values():
        [job] = status(state)["jobs"]
        assert job["state"] == "done" and job["trials_finished"] == 6
    shown = hpod(states["alpha"], "status", "--json", "--storage", postgres_url)
    hosts = json.loads(shown.stdout)["hosts"][STUDY]
    assert set(hosts) == {"alpha", "beta"} and sum(h["finished"] for h in hosts.values()) == 6


def test_a_killed_host_trial_is_failed_after_the_grace_period_and_the_study_goes_on(tmp_path, postgres_url):
    job_file = write_job(tmp_path, epochs=40)
    alpha, beta = tmp_path / "alpha", tmp_path / "beta"
    enqueue_shared(alpha, job_file, postgres_url, "--trials", "2")  # alpha's trial trains long enough to be killed
    enqueue_shared(beta, job_file, postgres_url, "--trials", "2", "--max-epochs", "2")  # beta's finish quickly
    first = host(alpha, "alpha")

    def alpha_training():
        try:
            running = shared(postgres_url).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            return None
        return next((t for t in running if host_of(t) == "alpha" and t.intermediate_values), None)

    trial = wait_for(alpha_training, timeout=120, what="alpha to train a trial")
    worker_pid = int(trial.user_attrs[WORKER].rsplit(":", 2)[1])
    os.kill(first.pid, signal.SIGKILL)
    os.kill(worker_pid, signal.SIGKILL)
    first.wait()
    wait_for(lambda: process_gone(worker_pid), timeout=10, what="alpha's worker to die")
    assert (alpha / "checkpoints" / STUDY / f"trial_{trial.number:05d}.pt").exists()

    out = finish(host(beta, "beta", "--until-idle", "--host-grace", "6"), timeout=400)
    trials = shared(postgres_url).trials
    dead = trials[trial.number]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["fail_reason"].startswith("host alpha silent for ")
    assert "host alpha silent for" in out
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert all(host_of(t) == "beta" for t in trials if t.state == TrialState.COMPLETE)

    finish(host(alpha, "alpha", "--until-idle"))  # alpha comes back: it drops the trial, never finishes it twice
    assert not (alpha / "checkpoints" / STUDY / f"trial_{trial.number:05d}.pt").exists()
    assert shared(postgres_url).trials[trial.number].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in shared(postgres_url).trials) == 2


def running_trial(study, worker, beat):
    trial = study.ask()
    trial.set_user_attr(WORKER, worker)
    if beat is not None:
        trial.set_user_attr(BEAT, beat)
    return trial


def test_only_other_hosts_silent_past_the_grace_period_are_failed(tmp_path, postgres_url, monkeypatch):
    monkeypatch.setenv("HPOD_HOST", "here")
    study = optuna.create_study(study_name="s", storage=open_storage(postgres_url))
    now = time.time()
    own_silent = running_trial(study, "here:1:1.00", now - 3600)  # this host's orphan: resumed, not failed
    other_silent = running_trial(study, "there:2:2.00", now - 700)
    other_alive = running_trial(study, "there:3:3.00", now - 5)
    finished = running_trial(study, "there:4:4.00", now - 3600)
    study.tell(finished, 1.0)
    assert [(n, h) for n, h, _ in silent_trials(study, grace_s=600)] == [(other_silent.number, "there")]
    state = StateDir(tmp_path / "state").create()
    assert fail_silent_trials(study, 600, state) == [other_silent.number]
    assert fail_silent_trials(study, 600, state) == []  # already failed: left alone
    states = {t.number: t.state for t in study.trials}
    assert states[own_silent.number] == states[other_alive.number] == TrialState.RUNNING
    assert states[other_silent.number] == TrialState.FAIL
    assert trials_by_host(study) == {"here": {"running": 1, "finished": 0}, "there": {"running": 1, "finished": 1}}
    log = (state.logs / "s.log").read_text()
    assert "host there silent for 7" in log


def test_a_returning_host_drops_the_checkpoints_of_failed_trials_only(tmp_path):
    study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    failed, kept = study.ask(), study.ask()
    study.tell(failed, state=TrialState.FAIL)
    directory = tmp_path / "checkpoints" / "s"
    directory.mkdir(parents=True)
    paths = {n: directory / f"trial_{n:05d}.pt" for n in (failed.number, kept.number)}
    for path in paths.values():
        path.write_bytes(b"x")
    drop_failed_checkpoints(study, tmp_path / "checkpoints")
    assert not paths[failed.number].exists() and paths[kept.number].exists()


def test_enqueue_refuses_an_unreachable_postgresql_in_one_line(tmp_path):
    url = f"postgresql+psycopg://postgres@/nothing?host={tmp_path}"
    job_file = write_job(tmp_path, epochs=1)
    result = hpod(
        tmp_path / "state", "enqueue", "--budget", "20K", "--horizon", "h1", "--job", job_file, "--storage", url
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot be opened" in result.stderr
    assert not (tmp_path / "state" / "queue.db").exists() or status(tmp_path / "state")["jobs"] == []


@pytest.mark.parametrize("value", ["0", "nan", "-5", "1e400"])
def test_a_bad_grace_period_is_refused_in_one_line(tmp_path, value):
    result = hpod(tmp_path / "state", "daemon", "--until-idle", "--host-grace", value)
    assert result.returncode == 2 and "--host-grace" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


class FailedElsewhere:
    """An objective during which another host fails the trial (this host was silent too long)."""

    def __init__(self, url: str, checkpoints):
        self.url, self.checkpoints = url, checkpoints

    def __call__(self, trial) -> float:
        other = optuna.load_study(study_name=trial.study.study_name, storage=open_storage(self.url))
        other.tell(trial.number, state=TrialState.FAIL)
        trial.report(1.0, 0)  # this host's next write finds the trial finished
        return 1.0

    def after_trial(self, study, trial) -> None:
        raise AssertionError("a trial failed elsewhere must not be counted here")


def test_a_cut_off_worker_finds_its_trial_failed_elsewhere_and_drops_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    resume = tmp_path / "checkpoints" / "s" / "trial_00000.pt"
    resume.parent.mkdir(parents=True)
    resume.write_bytes(b"x")
    frozen = run_trial(study, FailedElsewhere(url, tmp_path / "checkpoints"))
    assert frozen.number == 0 and frozen.state == TrialState.FAIL
    assert not resume.exists()
