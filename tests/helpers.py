"""Running hpod as a person would: real processes on a real state directory."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpod.records import DEVICE, EPOCHS_RUN, LEARNING_CURVE, WORKER
from hpod.storage import open_storage

TEST_JOB = """
name: daemon
grid: {{d_model: [16, 32], n_layers: [1, 2], n_heads: [2], d_ff_mult: [2], tolerance: 0.5}}
search: {{n_trials: 2, n_startup_trials: 2, epochs: [{epochs}], pruner: none, warmup_steps: [10, 20, 10],
         forced_extremes: false, final_seeds: {seeds}, max_crashes: {crashes}}}
train: {{patience: 20}}
"""


def write_job(directory: Path, epochs: int, seeds: int = 0, crashes: int = 3) -> str:
    path = directory / f"job-{epochs}-{seeds}-{crashes}.yaml"
    path.write_text(TEST_JOB.format(epochs=epochs, seeds=seeds, crashes=crashes))
    return str(path)


def hpod(state: Path, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hpod", *args, "--state-dir", str(state)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def start_daemon(state: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "hpod", "daemon", *args, "--state-dir", str(state)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def enqueue(state: Path, job_file: str, *args: str) -> list[int]:
    """Queue the test job at 20K and h1 (unless args say otherwise); the new job ids."""
    result = hpod(state, "enqueue", "--budget", "20K", "--horizon", "h1", "--job", job_file, *args)
    assert result.returncode == 0, result.stderr
    return [int(line.split()[0]) for line in result.stdout.splitlines()]


def finish(daemon: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a daemon to exit 0; its output."""
    out, _ = daemon.communicate(timeout=timeout)
    assert daemon.returncode == 0, out
    return out


def status(state: Path) -> dict:
    result = hpod(state, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate: Callable[[], object], timeout: float = 90, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def study(state: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{state / 'optuna.db'}"))


def running_worker(state: Path, name: str) -> tuple[int, int] | None:
    """(trial number, worker pid) of a RUNNING trial that has reported at least one epoch."""
    if not (state / "optuna.db").exists():
        return None
    try:
        trials = study(state, name).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    except KeyError:
        return None
    for trial in trials:
        if "worker" in trial.user_attrs and trial.intermediate_values:
            return trial.number, int(trial.user_attrs["worker"].rsplit(":", 2)[1])
    return None


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def job_field(state: Path, field: str, job_id: int = 1):
    """A field of a job, read straight from queue.db (cheaper than `hpod status` in a loop)."""
    with sqlite3.connect(f"file:{state / 'queue.db'}?mode=ro", uri=True, timeout=30) as db:
        row = db.execute(f"SELECT {field} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else row[0]


LOGGED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ")


def log_lines(path: Path) -> list[str]:
    """A trial log's lines without the time each begins with (which every line must have)."""
    lines = path.read_text().splitlines()
    assert all(LOGGED_AT.match(line) for line in lines), lines
    return [LOGGED_AT.sub("", line) for line in lines]


@contextlib.contextmanager
def answered_within(seconds: int):
    """Fail a command that blocks (a FIFO's open) instead of hanging the suite: the alarm's
    exception interrupts the blocked call."""

    def late(*_):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, late)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def finished_trial(
    state: TrialState, host: str | None, device: str, epochs: int, epoch_s: float, params: int = 30_000
) -> FrozenTrial:
    """A trial as a worker on `host` records it (None: an imported one, with no worker)."""
    attrs = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "param_count": params, DEVICE: device}
    attrs |= {EPOCHS_RUN: epochs, LEARNING_CURVE: [{"epoch": e, "seconds": epoch_s} for e in range(epochs)]}
    if host is not None:
        attrs[WORKER] = f"{host}:4242:1796300000.00"
    value = None if state == TrialState.FAIL else 0.5
    return optuna.trial.create_trial(state=state, value=value, params={}, distributions={}, user_attrs=attrs)
