"""What a user sees of a job before and while it runs: the estimate and `hpod show` of a queued
job, the ETA from the first trial's first steps, `hpod plan`, `hpod log -f`, and the event
command; with real daemons on real queues."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import optuna

from hpod.storage import open_storage
from hpod.supervisor.planning import plan_queue, run_seconds
from hpod.supervisor.queue import Queue
from hpod.supervisor.status import job_status
from hpod.trial.memory import GIB
from tests.helpers import enqueue, finish, hpod, running_worker, start_daemon, status, wait_for, write_job

STUDY = "daemon-20K-h1"


def test_enqueue_prints_an_estimate_and_show_describes_the_queued_job(state, tmp_path):
    job_file = write_job(tmp_path, epochs=3)
    result = hpod(state, "enqueue", "--budget", "20K", "--horizon", "h1", "--job", job_file)
    assert result.returncode == 0, result.stderr
    assert "on cpu: epoch " in result.stdout and "study " in result.stdout
    assert json.loads((state / "step_times.json").read_text())  # the timings are kept for the next enqueue
    shown = hpod(state, "show", "1")
    assert shown.returncode == 0, shown.stderr
    assert "queued" in shown.stdout and "estimate: on cpu" in shown.stdout and "architectures" in shown.stdout
    by_name = json.loads(hpod(state, "show", STUDY, "--json").stdout)
    assert by_name["job"]["id"] == 1 and by_name["job"]["settings"]["trials"] == 2 and by_name["trials"] == []
    assert by_name["job"]["estimate"]["study_s"][0] > 0
    missing = hpod(state, "show", "nosuch-study")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_status_gives_an_eta_and_step_progress_before_any_trial_has_finished(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=40))
    daemon = start_daemon(state)

    def first_trial_eta():
        [job] = status(state)["jobs"]
        return job["trials_finished"] == 0 and job["eta_s"] is not None and job["current_step"] is not None and job

    job = wait_for(first_trial_eta, timeout=120, what="an ETA during the first trial")
    assert job["eta_s"] > 0 and job["current_step"] is not None and job["epoch_steps"] > 0
    table = hpod(state, "status", "--wide").stdout
    assert re.search(rf"\bt\d+ e\d+ \d+/{job['epoch_steps']}\b", table), table
    daemon.send_signal(signal.SIGTERM)
    finish(daemon, timeout=60)


def seed_run_worker(state) -> int | None:
    """The pid of a seed run's worker once it has ended an epoch: from the seed study itself, so
    that a short run is seen whatever the queue's progress writes (every few seconds) caught of it."""
    names = optuna.get_all_study_names(open_storage(f"sqlite:///{state / 'optuna.db'}", create=False))
    seeds = [name for name in names if name.startswith(f"{STUDY}-seeds-t")]
    found = running_worker(state, seeds[0]) if seeds else None
    return None if found is None else found[1]


def test_during_the_seed_runs_status_says_which_and_its_eta_is_plans_time_left(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=12, seeds=2))
    daemon = start_daemon(state)
    worker = wait_for(lambda: (state / "optuna.db").exists() and seed_run_worker(state), timeout=240, what="a seed run")
    os.kill(worker, signal.SIGSTOP)  # held mid-run, so that what status shows is what the test reads
    try:
        job = Queue(state / "queue.db").job(1)
        assert job.trials_finished == job.target and job.current_trial is not None, job
        assert job_status(job)["eta_s"] == plan_queue([job], 24)[0]["left_s"] > 0  # one figure, not two
        assert job_status(job)["eta_s"] >= run_seconds(job) * (2 - job.seeds_finished - 1)  # the seeds left
        table = hpod(state, "status", "--wide").stdout
        assert re.search(r"\bseed [12]/2 e\d+ \d+/\d+\b", table), table
        [shown] = status(state)["jobs"]
        assert shown["eta_s"] is not None
    finally:
        os.kill(worker, signal.SIGCONT)
    daemon.send_signal(signal.SIGTERM)
    finish(daemon, timeout=60)


def test_plan_lists_jobs_in_the_order_the_daemon_claims_them(state, tmp_path):
    job_file = write_job(tmp_path, epochs=1)
    enqueue(state, job_file, "--budget", "20K,30K", "--no-ladder")  # a ladder rung would wait
    enqueue(state, job_file, "--budget", "40K", "--priority", "5")
    queue = Queue(state / "queue.db")
    held = queue.claim("someone", 60)
    queue.release(held.id, "someone", "interrupted")
    planned = json.loads(hpod(state, "plan", "--hours", "10", "--json").stdout)
    copy = tmp_path / "copy.db"
    shutil.copy(state / "queue.db", copy)
    claims = Queue(copy)
    order = [row.id for row in iter(lambda: claims.claim("daemon", 60), None)]
    assert [p["id"] for p in planned] == order and len(order) == 3
    assert all(p["run_s"] > 0 and p["runs_in_window"] == p["runs_left"] for p in planned)  # tiny: all fit
    tight = json.loads(hpod(state, "plan", "--hours", "0.0001", "--json").stdout)
    assert tight[0]["runs_in_window"] < tight[0]["runs_left"] and tight[0]["finishes_after_s"] is None


def test_log_follows_a_running_job_until_it_ends_with_each_epoch_as_it_ends(state, tmp_path):
    enqueue(state, write_job(tmp_path, epochs=8))
    daemon = start_daemon(state, "--until-idle")
    command = [sys.executable, "-m", "hpod", "log", "1", "-f", "--state-dir", str(state)]
    follower = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finish(daemon)
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert out.count("Trial ") == 2
    assert re.search(r"[+-]\d{4} trial [01] epoch \d: best val \d\.\d{4}\n", out), out  # while it ran
    trial_lines = [line for line in out.splitlines() if " Trial " in line]
    assert hpod(state, "log", STUDY).stdout.splitlines() == trial_lines  # afterwards: the finished trials


def test_the_event_command_gets_its_variables_and_a_failing_one_does_not_stop_the_daemon(state, tmp_path):
    job_file = write_job(tmp_path, epochs=1)
    enqueue(state, job_file, "--budget", "20K,30K")
    told = tmp_path / "told"
    told.mkdir()
    record = f"env | grep ^HPOD_ | sort > {told}/$HPOD_JOB_ID; test $HPOD_JOB_ID != 1"  # job 1's command fails
    out = finish(start_daemon(state, "--until-idle", "--on-event", record))
    assert [j["state"] for j in status(state)["jobs"]] == ["done", "done"]
    for job in status(state)["jobs"]:
        env = dict(line.split("=", 1) for line in (told / str(job["id"])).read_text().splitlines())
        assert env["HPOD_STATE"] == "done" and env["HPOD_STUDY"] == job["study"]
        assert float(env["HPOD_BEST_LOSS"]) == job["best_val_loss"]
    assert "event command for job 1 (done) exited 1" in out


def peak_run(state, *args: str) -> tuple[int, str, int]:
    """(exit code, stderr, peak resident bytes) of one hpod command, its own peak (wait4)."""
    command = [sys.executable, "-m", "hpod", *args, "--state-dir", str(state)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, stderr, usage.ru_maxrss * 1024


def test_the_estimate_of_a_large_study_times_within_an_eighth_of_the_memory_limit_and_says_how(tmp_path):
    request = ("enqueue", "--budget", "20M", "--horizon", "h1", "--memory-limit", "2G")  # the default job's grid
    code, _, bare = peak_run(tmp_path / "bare", *request, "--no-estimate")
    assert code == 0
    code, stderr, timed = peak_run(tmp_path / "timed", *request)
    assert code == 0, stderr
    assert "timed as 1 and " in stderr and "its full step needs more memory than timing may use" in stderr
    assert timed - bare <= 1.3 * 2 * GIB / 8  # the memory model's tolerance over the timing's share
    shown = hpod(tmp_path / "timed", "show", "1")
    assert "timed as 1 and " in shown.stdout
