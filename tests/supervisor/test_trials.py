"""Why a trial failed reaches every place a person looks the morning after: the trial's
`fail_reason`, its traceback file, its log line, `hpod show`, `hpod status` and the job's end."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import enqueue, finish, hpod, start_daemon, status, study, write_job

MISSING_DEVICE = "mps"  # a job written for a Mac: refused at enqueue here, so queued as if from one
pytestmark = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")


def test_a_trial_that_raises_keeps_its_reason_traceback_and_architecture_everywhere(state, tmp_path):
    job = Path(write_job(tmp_path, epochs=1))
    enqueue(state, str(job), "--no-estimate", "--memory-limit", "4G")
    mac_only = f"train: {{patience: 20, device: {MISSING_DEVICE}}}"
    job.write_text(job.read_text().replace("train: {patience: 20}", mac_only))
    refused = hpod(state, "enqueue", "--budget", "30K", "--horizon", "h1", "--job", str(job), "--no-estimate")
    assert refused.returncode == 2 and "MPS is not available" in refused.stderr  # said at enqueue, in one line
    with sqlite3.connect(state / "queue.db") as queue:  # the row a machine with MPS would have queued
        queue.execute("UPDATE jobs SET job_text = ?", (job.read_text(),))
    out = finish(start_daemon(state, "--until-idle"))

    trials = study(state, "daemon-20K-h1").trials
    assert len(trials) >= 2 and all(t.state.name == "FAIL" for t in trials)  # until max_failures in a row
    for trial in trials:
        reason = trial.user_attrs["fail_reason"]
        assert re.fullmatch(r"[A-Za-z]+Error: .*mps.*", reason), reason
        assert "Traceback (most recent call last)" in Path(trial.user_attrs["traceback"]).read_text()
        assert trial.user_attrs["d_model"] in (16, 32) and trial.user_attrs["param_count"] > 0
    lines = (state / "logs" / "daemon-20K-h1.log").read_text().splitlines()
    assert len(lines) == len(trials) and all("None" not in line for line in lines), lines
    assert all(f"reason={trials[0].user_attrs['fail_reason'].split(':')[0]}" in line for line in lines)
    assert all(f"(traceback: {state}" in line for line in lines) and "failed: " in out

    [job] = status(state)["jobs"]
    assert job["state"] == "failed" and trials[-1].user_attrs["fail_reason"] in job["last_error"]
    assert "None" not in job["last_error"]
    shown = hpod(state, "status").stdout
    assert f"job 1 failed: study daemon-20K-h1: {len(trials)} trials in a row failed (last: {reason})" in shown
    described = hpod(state, "show", "1").stdout
    last = trials[-1]
    assert f"trial {last.number} failed: {reason} (traceback: {last.user_attrs['traceback']})" in described
    assert hpod(state, "log", "1").stdout.count("(traceback: ") == len(trials)


def test_a_worker_that_raises_outside_a_trial_reports_why_with_its_traceback(tmp_path):
    """The worker's protocol end to end: a task it cannot even plan (a row without its job file).
    Its stdin stays open, as the daemon keeps it: end of stdin means the daemon died."""
    read_fd, write_fd = os.pipe()
    task = {"job": {"study_name": "broken-20K-h1", "id": 1}, "state_root": str(tmp_path / "state")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "hpod.supervisor.worker", str(write_fd)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(write_fd,), text=True,
    )  # fmt: skip
    os.close(write_fd)
    worker.stdin.write(json.dumps(task) + "\n")
    worker.stdin.flush()
    with open(read_fd) as reports:
        [report] = [json.loads(line) for line in reports]  # until the worker exits
    assert worker.wait(timeout=120) == 1 and report["kind"] == "crashed"
    worker.stdin.close()
    match = re.fullmatch(r"KeyError: .* \(traceback: (.*)\)", report["reason"])
    assert match is not None, report
    traceback_file = Path(match.group(1))
    assert "Traceback (most recent call last)" in traceback_file.read_text()
    assert traceback_file.parent == tmp_path / "state" / "logs" / "tracebacks"
    last = worker.stderr.read().splitlines()[-1]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", last), last  # the worker's lines carry a time
