"""`hpod daemon --workers N`: several trials of a job at once, each in its own worker, on a real
queue and a real study."""

import itertools
import os
import signal

import pytest
from optuna.trial import TrialState

from hpod.errors import HpodError
from hpod.supervisor.slots import make_slots, parse_devices
from tests.helpers import enqueue, finish, hpod, process_gone, start_daemon, status, study, wait_for, write_job

STUDY = "daemon-20K-h1"


def training(state, name=STUDY) -> dict[int, int]:
    """Trial number → worker pid of the RUNNING trials that have reported an epoch."""
    try:
        trials = study(state, name).get_trials(states=(TrialState.RUNNING,))
    except (KeyError, FileNotFoundError):
        return {}
    return {t.number: int(t.user_attrs["worker"].rsplit(":", 2)[1]) for t in trials if t.intermediate_values}


def overlapping(trials) -> bool:
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_two_workers_train_at_once_and_the_study_ends_at_its_target_exactly(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=3), "--trials", "4")
    out = finish(start_daemon(state, "--until-idle", "--workers", "2"))
    trials = study(state, STUDY).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    assert overlapping(complete), "no two trials ran at once"
    assert len({t.user_attrs["worker"] for t in complete}) == 4  # each trial its own worker process
    assert len({t.params["arch"] + str(t.params["dropout"]) for t in complete}) == 4  # no two drew alike
    [job] = status(state)["jobs"]
    assert job["state"] == "done" and job["trials_finished"] == 4
    assert "2 worker slot(s)" in out


@pytest.mark.slow  # 19 s on CI's 2 cores; two workers on one job stay in `make test`
def test_a_job_with_fewer_trials_left_than_slots_lets_the_next_job_use_them(state, tmp_path):
    job_file = write_job(tmp_path, epochs=3)
    enqueue(state, job_file, "--budget", "20K,30K", "--trials", "1", "--no-ladder")  # independent: may overlap
    finish(start_daemon(state, "--until-idle", "--workers", "2"))
    jobs = status(state)["jobs"]
    assert [j["state"] for j in jobs] == ["done", "done"]
    first, second = (study(state, j["study"]).trials[0] for j in jobs)
    assert overlapping([first, second]), "the second job waited for the first"


def test_a_stop_ends_both_workers_and_a_kill_9_leaves_both_trials_to_continue(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=40), "--trials", "4")
    daemon = start_daemon(state, "--workers", "2")
    first = wait_for(lambda: len(training(state)) == 2 and training(state), timeout=120, what="two training workers")
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    for pid in first.values():
        wait_for(lambda pid=pid: process_gone(pid), timeout=30, what="a worker to notice its daemon died")
    trials = study(state, STUDY).trials
    assert all(trials[n].state == TrialState.RUNNING for n in first)  # left to be continued, not failed

    daemon = start_daemon(state, "--workers", "2")
    resumed = wait_for(
        lambda: all("resumed_from" in study(state, STUDY).trials[n].user_attrs for n in first),
        timeout=120,
        what="both trials to continue from their checkpoints",
    )
    assert resumed
    assert hpod(state, "stop").returncode == 0
    finish(daemon, timeout=60)
    trials = study(state, STUDY).trials
    assert all(trials[n].state == TrialState.RUNNING for n in first)
    assert not any(t.state == TrialState.FAIL for t in trials)
    assert status(state)["jobs"][0]["state"] == "interrupted"


def test_slots_divide_the_cores_and_share_each_device():
    cpu = make_slots(3, ["cpu"], cores=4)
    assert [(s.device, s.threads, s.share) for s in cpu] == [("cpu", 1, 1 / 3)] * 3
    gpus = make_slots(4, ["cuda:0", "cuda:1"], cores=16)
    assert [s.device for s in gpus] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert all(s.share == 0.5 and s.threads is None for s in gpus)
    assert make_slots(1)[0].device is None  # one worker keeps the job's own device


@pytest.mark.parametrize("text", ["gpu0", "cuda:x", "", ",", "cuda:0,tpu"])
def test_a_bad_device_list_is_refused_in_one_line(text):
    with pytest.raises(HpodError, match="--devices"):
        parse_devices(text)


def test_a_bad_devices_option_exits_2_naming_it(state):
    result = hpod(state, "daemon", "--until-idle", "--workers", "2", "--devices", "gpu0")
    assert result.returncode == 2 and "--devices" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_device_this_machine_lacks_is_refused_when_the_daemon_starts(state):
    result = hpod(state, "daemon", "--devices", "cuda:4096", "--until-idle")
    assert result.returncode == 2 and result.stderr.startswith("Error: --devices: 'cuda:4096'"), result.stderr
    assert result.stderr.count("\n") == 1 and not (state / "queue.db").exists()
