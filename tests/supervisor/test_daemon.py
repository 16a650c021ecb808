import json
import os
import re
import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.helpers import (
    enqueue,
    finish,
    hpod,
    job_field,
    log_lines,
    running_worker,
    start_daemon,
    status,
    study,
    wait_for,
    write_job,
)

STUDY = "daemon-20K-h1"


def test_the_daemon_runs_queued_jobs_to_done_and_status_reports_them(state, tmp_path):
    job_file = write_job(tmp_path, epochs=1)
    ids = enqueue(state, job_file, "--horizon", "h1,h5")
    assert "timed steps only" in hpod(state, "show", str(ids[0])).stdout  # nothing of the job file has run here
    assert len(ids) == 2
    out = finish(start_daemon(state, "--until-idle"))
    jobs = {j["id"]: j for j in status(state)["jobs"]}
    for job_id in ids:
        assert jobs[job_id]["state"] == "done"
        assert jobs[job_id]["trials_finished"] == jobs[job_id]["n_trials"] == 2
        assert jobs[job_id]["best_val_loss"] > 0 and jobs[job_id]["best_arch"].startswith("d")
    assert out.count("Trial ") == 4 and "state=COMPLETE" in out  # the log lines reach the daemon's output
    tested = study(state, STUDY).user_attrs["test_evaluation"]  # the best trial, once, on the test split
    assert tested["trial"] == study(state, STUDY).best_trial.number and tested["test_loss"] > 0
    assert len((state / "logs" / "daemon-20K-h5.log").read_text().splitlines()) == 2
    expected = json.loads(hpod(state, "show", str(ids[0]), "--json").stdout)["job"]["estimate"]["expected_s"]
    landed = f"{jobs[ids[0]]['elapsed_s'] / expected:.2f}× its expected"
    assert landed in hpod(state, "show", str(ids[0])).stdout  # a done job says how its estimate landed
    runs = sum(jobs[i]["trials_finished"] for i in ids)
    per_run = sum(jobs[i]["elapsed_s"] for i in ids) / runs
    again = hpod(state, "enqueue", "--budget", "20K", "--horizon", "h10", "--job", job_file, "--json")
    [queued] = json.loads(again.stdout)  # the next enqueue of the job file rests on what these two measured
    assert queued["estimate"]["basis"].startswith(f"calibrated on {runs} runs of 2 studies of daemon here: 1.0 epochs")
    assert per_run / 2 < queued["estimate"]["calibrated_run_s"] < per_run * 2


def test_a_finished_search_runs_seed_runs_apart_and_the_evaluation_in_a_worker(state, tmp_path):
    """Seed runs never count toward the search or feed its sampler; the evaluation stores the
    baselines, the seeds' losses and the per-sample file the report bootstraps."""
    enqueue(state, write_job(tmp_path, epochs=1, seeds=2))
    out = finish(start_daemon(state, "--until-idle"), timeout=300)
    search = study(state, STUDY)
    assert len(search.trials) == 2 and out.count("Trial ") == 4
    seeds = study(state, f"{STUDY}-seeds-t{search.best_trial.number}")
    assert [t.state for t in seeds.trials] == [TrialState.COMPLETE] * 2
    assert {t.params["arch"] for t in seeds.trials} == {search.best_trial.params["arch"]}
    assert len({t.user_attrs["seed"] for t in seeds.trials} | {search.best_trial.user_attrs["seed"]}) == 3
    tested = search.user_attrs["test_evaluation"]
    assert tested["seeds"] == 2 and len(tested["seed_val_losses"]) == 2
    assert (state / "checkpoints" / STUDY / "samples.npz").is_file()
    constant = search.user_attrs["baselines"]["constant"]["val_loss"]
    [job] = status(state)["jobs"]
    assert job["constant_val_loss"] == pytest.approx(constant)
    assert job["skill"] == pytest.approx(1 - job["best_val_loss"] / constant)
    shown = hpod(state, "show", "1", "--wide").stdout.splitlines()
    seed_mean = sum(tested["seed_val_losses"]) / 2
    assert shown[1].startswith(f"  result: val mean {seed_mean:.4f}±") and "2 seed runs" in shown[1]  # it leads
    assert f"test mean {sum(tested['seed_test_losses']) / 2:.4f}±" in shown[1]  # the seeds', not the best trial's
    logged = hpod(state, "log", "1").stdout.splitlines()
    best = search.best_trial.number
    seeded = [line.split(" ", 1)[1].startswith(f"seed run of trial {best}: ") for line in logged]
    assert seeded == [False, False, True, True]  # the search, then the seed runs, in time order
    assert hpod(state, "log", STUDY, "-n", "1").stdout.splitlines() == logged[-1:]
    epochs = hpod(state, "log", "1", "--trial", str(best)).stdout
    curve = search.best_trial.user_attrs["learning_curve"][0]
    assert f"{curve['val_loss']:.4f}" in epochs and f"{curve['learning_rate']:.2e}" in epochs and curve["seconds"] > 0


def test_a_worker_killed_with_sigkill_fails_its_trial_alone(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=6))
    daemon = start_daemon(state, "--until-idle")
    number, pid = wait_for(lambda: running_worker(state, STUDY), what="a training worker")
    os.kill(pid, signal.SIGKILL)
    finish(daemon)
    trials = study(state, STUDY).trials
    killed = trials[number]
    assert killed.state == TrialState.FAIL
    assert "worker killed by signal 9 (SIGKILL)" in killed.user_attrs["fail_reason"]
    assert "OOM" not in killed.user_attrs["fail_reason"]  # killed by hand, not by the kernel
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert status(state)["jobs"][0]["state"] == "done"
    lines = log_lines(state / "logs" / f"{STUDY}.log")
    assert any(line.startswith(f"Trial {number}: ") and "state=FAIL" in line and "SIGKILL" in line for line in lines)
    assert not (state / "checkpoints" / STUDY / f"trial_{number:05d}.pt").exists()  # no resume state left behind


@pytest.mark.parametrize("how", ["sentinel", "sigterm"])
def test_a_stop_ends_the_daemon_cleanly_and_leaves_the_job_resumable(state, tmp_path, how):
    enqueue(state, write_job(tmp_path, epochs=30))
    daemon = start_daemon(state)
    number, pid = wait_for(lambda: running_worker(state, STUDY), what="a training worker")
    if how == "sentinel":
        assert hpod(state, "stop").returncode == 0
    else:
        daemon.send_signal(signal.SIGTERM)
    finish(daemon, timeout=30)
    assert not (state / "STOP_HPO").exists()
    job = status(state)["jobs"][0]
    assert job["state"] == "interrupted" and not status(state)["daemon_alive"]
    assert study(state, STUDY).trials[number].state == TrialState.RUNNING  # to be continued
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10, what="the worker to exit")


def test_a_stopped_job_resumes_first_and_counts_no_trial_twice(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=4))
    daemon = start_daemon(state)
    number, _ = wait_for(lambda: running_worker(state, STUDY), what="a training worker")
    daemon.send_signal(signal.SIGTERM)
    finish(daemon, timeout=30)
    finish(start_daemon(state, "--until-idle"))
    trials = study(state, STUDY).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[number].user_attrs["epochs_run"] == 4
    assert status(state)["jobs"][0]["state"] == "done"


@pytest.mark.slow  # test_queue.py's racing claimers check the claim itself
def test_two_daemons_on_one_queue_never_run_the_same_job(state, tmp_path):
    job_file = write_job(tmp_path, epochs=1)
    ids = enqueue(state, job_file, "--budget", "20K,30K,40K", "--trials", "1", "--no-ladder")
    daemons = [start_daemon(state, "--until-idle") for _ in range(2)]
    for daemon in daemons:
        finish(daemon)
    jobs = status(state)["jobs"]
    assert [j["id"] for j in jobs] == ids
    assert all(j["state"] == "done" and j["attempts"] == 1 for j in jobs), [
        (j["state"], j["attempts"], j["last_error"]) for j in jobs
    ]
    for j in jobs:
        assert len(study(state, j["study"]).trials) == 1


def test_pause_resume_and_cancel_act_on_a_running_job_between_steps(state, tmp_path):
    (job_id,) = enqueue(state, write_job(tmp_path, epochs=30))
    daemon = start_daemon(state, "--hang-timeout", "60")
    try:
        number, first_worker = wait_for(lambda: running_worker(state, STUDY), what="a training worker")
        assert hpod(state, "pause", str(job_id)).stdout.strip() == f"job {job_id}: pausing"
        wait_for(lambda: job_field(state, "state") == "paused", timeout=30, what="the pause")
        assert study(state, STUDY).trials[number].state == TrialState.RUNNING  # kept, to be resumed
        assert hpod(state, "resume", str(job_id)).stdout.strip() == f"job {job_id}: queued"
        wait_for(lambda: job_field(state, "attempts") == 2, what="the job to be claimed again")
        wait_for(lambda: (running_worker(state, STUDY) or (0, first_worker))[1] != first_worker, what="a new worker")
        assert hpod(state, "cancel", str(job_id)).stdout.strip() == f"job {job_id}: cancelling"
        wait_for(lambda: job_field(state, "state") == "cancelled", timeout=30, what="the cancel")
    finally:
        daemon.send_signal(signal.SIGTERM)
        finish(daemon, timeout=30)
    cancelled = study(state, STUDY).trials[number]  # ended as the stop ends it, and never to be resumed
    assert cancelled.state == TrialState.FAIL and cancelled.user_attrs["fail_reason"] == "cancelled (hpod cancel)"
    assert not (state / "checkpoints" / STUDY / f"trial_{number:05d}.pt").exists()


def test_systemd_hears_ready_and_stopping(state, tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        daemon = start_daemon(state, "--until-idle", env={**os.environ, "NOTIFY_SOCKET": path})
        finish(daemon)
        messages = []
        sock.settimeout(1)
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                break
    assert messages[0] == "READY=1" and messages[-1] == "STOPPING=1"


@pytest.mark.slow  # test_resume.py's ten kill -9s and the deaths-after-a-claim test cover it
def test_a_daemon_killed_with_sigkill_leaves_its_job_to_the_next_daemon(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=2))
    daemon = start_daemon(state)
    _, worker = wait_for(lambda: running_worker(state, STUDY), what="a training worker")
    daemon.kill()
    daemon.wait()
    wait_for(lambda: not os.path.exists(f"/proc/{worker}"), timeout=10, what="the orphaned worker to exit")
    finish(start_daemon(state, "--until-idle"))
    trials = study(state, STUDY).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2 and len(trials) == 2
    db = sqlite3.connect(state / "queue.db")
    assert db.execute("SELECT state, attempts FROM jobs").fetchone() == ("done", 2)


def test_a_memory_floor_above_free_ram_pauses_the_running_trial_and_status_says_why(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=2))
    floor = ("--guard", "memory_floor_gib=100000", "--guard", "memory_resume_gib=100000")
    told = tmp_path / "events"
    daemon = start_daemon(state, *floor, "--on-event", f'echo "$HPOD_JOB_ID $HPOD_STATE $HPOD_REASON" >> {told}')
    paused = wait_for(lambda: next((d for d in status(state)["daemons"] if d["paused_reason"]), None), what="a pause")
    assert paused["paused_reason"].startswith("RAM available ") and "< 100000 GiB" in paused["paused_reason"]
    shown = hpod(state, "status").stdout
    assert f"daemon pid {paused['pid']} paused: RAM available" in shown
    assert job_field(state, "state") == "running" and job_field(state, "current_epoch") is None
    assert hpod(state, "stop").returncode == 0
    finish(daemon)
    assert job_field(state, "state") == "interrupted"
    [trial] = study(state, STUDY).trials
    assert trial.state == TrialState.RUNNING  # stopped while paused, to be resumed
    assert trial.user_attrs["pauses"][0]["reason"].startswith("RAM available ")
    [logged] = hpod(state, "log", "1").stdout.splitlines()  # the pause, at the time it began
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:]{8}[+-]\d{4} trial 0 paused \d+ s: RAM available ", logged), logged
    assert told.read_text().startswith("1 paused RAM available ")  # the guard's pause reaches the event command


def test_a_bad_guard_setting_is_refused_in_one_line(state):
    result = hpod(state, "daemon", "--until-idle", "--guard", "cpu_temp=80")
    assert result.returncode == 2 and result.stderr.strip() == "Error: unknown key guard.cpu_temp"


def test_a_job_whose_daemon_keeps_dying_in_its_trial_without_progress_fails_instead_of_looping(state, tmp_path):
    """systemd restarts a killed daemon; one that dies in the same trial, no epoch further each
    time, must not loop. (A RAM floor no machine has holds the trial before its first step.)"""
    enqueue(state, write_job(tmp_path, epochs=30, crashes=2))
    floor = ("--guard", "memory_floor_gib=100000", "--guard", "memory_resume_gib=100000")
    for _ in range(2):
        daemon = start_daemon(state, *floor)

        def held(pid: int = daemon.pid) -> bool:
            return any(d["pid"] == pid and d["alive"] and d["paused_reason"] for d in status(state)["daemons"])

        wait_for(held, what="the trial held")
        assert job_field(state, "current_trial") is not None
        daemon.kill()
        daemon.wait()
    out = finish(start_daemon(state, "--until-idle"))
    [job] = status(state)["jobs"]
    assert job["state"] == "failed" and "died 2 times" in job["last_error"], out


@pytest.mark.slow  # a crash test (27 s on CI's 2 cores); a daemon dying in its trial stays in `make test`
def test_deaths_of_the_daemon_right_after_a_claim_do_not_count_and_the_job_goes_on(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=1, crashes=2))
    for attempt in range(1, 4):
        daemon = start_daemon(state)
        wait_for(lambda n=attempt: job_field(state, "attempts") == n, what="the claim")
        daemon.kill()
        daemon.wait()
    finish(start_daemon(state, "--until-idle"))
    assert job_field(state, "state") == "done" and job_field(state, "crashes") == 0
    assert job_field(state, "current_trial") is None


def test_workers_killed_while_starting_are_restarted_not_failed_and_the_hang_limit_waits_for_training(state, tmp_path):
    import psutil

    job = Path(write_job(tmp_path, epochs=1))
    job.write_text(job.read_text().replace("forced_extremes: false,", "forced_extremes: false, max_failures: 2,"))
    enqueue(state, str(job))
    daemon = start_daemon(state, "--until-idle", "--hang-timeout", "2")  # less than a worker takes to start
    killed, deadline = 0, time.monotonic() + 120
    while killed < 3:  # more than max_failures: were they trials, the job would fail
        assert time.monotonic() < deadline, "no starting worker to kill"
        workers = psutil.Process(daemon.pid).children()
        if workers and job_field(state, "current_trial") is None:
            workers[0].kill()
            workers[0].wait()
            killed += 1
        time.sleep(0.05)
    out = finish(daemon, timeout=300)
    assert job_field(state, "state") == "done", out
    assert [t.state for t in study(state, STUDY).trials] == [TrialState.COMPLETE] * 2
    assert "before its trial began" in (job_field(state, "last_failure") or "")


def test_stop_with_no_daemon_running_is_refused_unless_it_arms_the_next_one(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=1))
    refused = hpod(state, "stop")
    assert refused.returncode == 2 and "no daemon is running" in refused.stderr and "--next" in refused.stderr
    assert not (state / "STOP_HPO").exists()
    assert hpod(state, "stop", "--next").returncode == 0 and (state / "STOP_HPO").exists()
    assert "STOP_HPO is set" in hpod(state, "status").stdout


def test_a_daemon_that_finds_an_older_stop_says_so_and_stops_before_starting_a_trial(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=1))
    assert hpod(state, "stop", "--next").returncode == 0
    os.utime(state / "STOP_HPO", (1_700_000_000, 1_700_000_000))  # written long before the daemon
    out = finish(start_daemon(state), timeout=120)
    [said] = [line for line in out.splitlines() if "older than this daemon" in line]
    assert "STOP_HPO from 2023-11-14" in said
    assert job_field(state, "state") == "queued" and job_field(state, "attempts") == 0  # nothing was started
    assert not (state / "STOP_HPO").exists()
    shown = hpod(state, "status").stdout
    assert "older than this daemon, found at start" in shown and "STOP_HPO is set" not in shown


def test_a_daemon_outside_its_run_window_says_so_once_and_status_says_when_it_opens(state, tmp_path):
    import datetime as dt

    enqueue(state, write_job(tmp_path, epochs=1))
    opens = dt.datetime.now() + dt.timedelta(hours=3, minutes=30)
    window = f"{opens:%H:%M}-{opens + dt.timedelta(hours=1):%H:%M}"
    daemon = start_daemon(state, "--window", window)

    def waiting() -> str | None:
        shown = hpod(state, "status").stdout
        return shown if "waiting for the run window" in shown else None

    try:
        shown = wait_for(waiting)
        assert f"waiting for the run window {window} (opens {opens:%H:%M}, in 3h2" in shown  # 3h29m or 3h30m
        [daemon_row] = status(state)["daemons"]
        assert daemon_row["window_opens"] == pytest.approx(opens.replace(second=0, microsecond=0).timestamp())
        assert job_field(state, "state") in ("queued", "running") and job_field(state, "current_trial") is None
    finally:
        daemon.send_signal(signal.SIGTERM)
    out = finish(daemon, timeout=120)
    assert out.count("waiting for the run window") == 1, out
