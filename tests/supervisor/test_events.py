"""A job file is data: its `on_event` runs only where the daemon's operator allows it, enqueue
says that a job carries one, and an event command that outlives its timeout ends with all it started."""

import time

from hpod.supervisor.events import job_commands, run_command
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import QueuedJob
from tests.helpers import TEST_JOB, finish, hpod, process_gone, start_daemon, status


def job_with_command(tmp_path, command: str) -> str:
    path = tmp_path / "job-with-command.yaml"
    path.write_text(TEST_JOB.format(epochs=1, seeds=0, crashes=3) + f"on_event: {command!r}\n")
    return str(path)


def queued_with_text(tmp_path, text: str) -> QueuedJob:
    queue = Queue(tmp_path / "queue.db")
    row = {"study_name": "s", "budget": 20_000, "horizon": 1, "job_name": "s", "data_sha256": "-", "n_trials": 1}
    [job_id] = queue.enqueue([row | {"job_text": text}], force=True)
    return queue.job(job_id)


def test_a_job_files_command_runs_only_where_the_daemon_allows_it(tmp_path):
    job = queued_with_text(tmp_path, f"on_event: 'touch {tmp_path}/x'\n")
    assert job_commands(job, None, allow_job=False) == []
    assert job_commands(job, "echo operator", allow_job=False) == ["echo operator"]
    assert job_commands(job, "echo operator", allow_job=True) == ["echo operator", f"touch {tmp_path}/x"]
    assert job_commands(queued_with_text(tmp_path, "name: plain\n"), None, allow_job=True) == []


def test_enqueue_says_a_job_carries_a_command_and_the_daemon_runs_only_the_operators(tmp_path):
    state, planted, operator = tmp_path / "state", tmp_path / "planted", tmp_path / "operator"
    job_file = job_with_command(tmp_path, f"touch {planted}")
    queued = hpod(state, "enqueue", "--budget", "20K", "--horizon", "h1", "--job", job_file, "--no-estimate")
    assert queued.returncode == 0 and "on_event" in queued.stderr and "--allow-job-commands" in queued.stderr
    out = finish(start_daemon(state, "--until-idle", "--on-event", f"touch {operator}"))
    assert status(state)["jobs"][0]["state"] == "done"
    assert operator.exists() and not planted.exists(), out
    assert "not run" in out


def test_an_event_command_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    pid_file = tmp_path / "pid"
    env = {"HPOD_JOB_ID": "1", "HPOD_STATE": "done"}
    assert run_command(f"sleep 300 & echo $! > {pid_file}; wait", env, timeout_s=1) is None
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not process_gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_gone(child), "the command's child outlived its timeout"
