import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from hpod.trial.grid import Arch
from hpod.trial.train import TrainConfig, Trainer
from tests.helpers import (
    hpod,
    job_field,
    log_lines,
    process_gone,
    running_worker,
    start_daemon,
    study,
    wait_for,
    write_job,
)

STUDY = "daemon-20K-h1"


# 600 MB: a write long enough to be caught in the middle (a fresh process: forking after torch's
# thread pool has started can hang).
BIG_WRITE = (
    "import sys, torch; from pathlib import Path; from hpod.trial import checkpoint; "
    "checkpoint.save(Path(sys.argv[1]), {'model': torch.zeros(150_000_000)})"
)


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_to_resume_from(dataset_h5, tmp_path):
    model_config = Arch(16, 1, 2, 32).model_config(dataset_h5.shape)
    config = TrainConfig(learning_rate=1e-3, weight_decay=1e-3, warmup_steps=10, epochs=2, seed=1)
    straight = Trainer(model_config, config, dataset_h5).fit()
    path = tmp_path / "trial.pt"
    first = Trainer(model_config, config, dataset_h5, checkpoint=path)
    first.train_epoch(lambda epoch, step: None)
    first.end_epoch(sum(first.position.losses) / len(first.position.losses))
    first.save()  # the good checkpoint: epoch 0 done

    writer = subprocess.Popen([sys.executable, "-c", BIG_WRITE, str(path)])
    partial = path.with_name(f"{path.name}.{writer.pid}.tmp")
    wait_for(lambda: partial.exists() and partial.stat().st_size > 0, timeout=60, what="the write to begin")
    writer.send_signal(signal.SIGKILL)
    assert writer.wait() == -signal.SIGKILL and partial.exists()  # killed mid-write

    resumed = Trainer(model_config, config, dataset_h5, checkpoint=path)
    assert resumed.resumed_from == (1, 0)
    result = resumed.fit()
    assert [r.val_loss for r in result.history] == [r.val_loss for r in straight.history]


@pytest.mark.slow
def test_a_study_survives_ten_daemon_kills_without_losing_or_doubling_a_trial(tmp_path):
    state, rng = tmp_path / "state", random.Random(20261126)
    job_file = write_job(tmp_path, epochs=3, crashes=20)  # ten deaths of its daemon, on purpose
    result = hpod(state, "enqueue", "--budget", "20K", "--horizon", "h1", "--job", job_file, "--trials", "12")
    assert result.returncode == 0, result.stderr
    kills = []
    while len(kills) < 10:
        daemon = start_daemon(state)
        found = wait_for(lambda d=daemon: running_worker(state, STUDY) or d.poll() is not None, what="a trial")
        time.sleep(rng.uniform(0.0, 2.0))
        daemon.kill()
        daemon.wait()
        if isinstance(found, tuple):
            wait_for(lambda found=found: process_gone(found[1]), timeout=10, what="the worker to exit")
        kills.append(found[0] if isinstance(found, tuple) else None)
    daemon = start_daemon(state, "--until-idle")
    out, _ = daemon.communicate(timeout=600)
    assert daemon.returncode == 0, out

    trials = study(state, STUDY).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 12, [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    keys = [(t.params["arch"], t.params["learning_rate"], t.params["dropout"]) for t in finished]
    assert len(set(keys)) == len(keys)  # no trial counted twice
    resumed = [t for t in finished if any(r["epoch"] > 0 for r in t.user_attrs.get("resumed_from", []))]
    assert resumed, f"no trial continued from a checkpoint after epoch 0 (kills during trials {kills})"
    assert job_field(state, "state") == "done"
    for db in ("queue.db", "optuna.db"):
        assert sqlite3.connect(state / db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    logged = [int(line.split(":")[0].split()[1]) for line in log_lines(state / "logs" / f"{STUDY}.log")]
    assert len(logged) == len(set(logged)) and set(logged) <= {t.number for t in finished}
