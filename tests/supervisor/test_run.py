"""`hpod run` is the daemon's phase machine in the foreground, on a private queue: each trial
in its own worker (so its memory is measured per trial), and STOP_HPO stops it as it stops a
daemon, leaving the trial to resume."""

from __future__ import annotations

import subprocess
import sys

from optuna.trial import TrialState

from tests.helpers import study, wait_for, write_job


def run_command(state, job_file: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "hpod", "run", "--budget", "20K", "--horizon", "h1", "--job", job_file,
            *args, "--state-dir", str(state)]  # fmt: skip


def test_stop_hpo_stops_a_run_between_steps_and_the_same_command_resumes_it(tmp_path):
    state, job_file = tmp_path / "state", write_job(tmp_path, epochs=10)
    running = subprocess.Popen(run_command(state, job_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list((state / "checkpoints").rglob("*.pt")), 180, "a trial's first checkpoint")
    (state / "STOP_HPO").touch()
    _, err = running.communicate(timeout=120)
    assert running.returncode == 1, err
    assert "daemon-20K-h1: interrupted" in err and "the same command resumes it" in err
    [trial] = study(state, "daemon-20K-h1").get_trials()
    assert trial.state == TrialState.RUNNING  # left to resume, not failed
    assert not (state / "STOP_HPO").exists()

    resumed = subprocess.run(run_command(state, job_file, "--trials", "1"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    [trial] = study(state, "daemon-20K-h1").get_trials()
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["resumed_from"], trial.user_attrs
