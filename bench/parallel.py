"""Parallel trials: trials per hour of one tiny study with 1 worker × all cores against N
workers × one core each, and a trial's bookkeeping on PostgreSQL against SQLite.

    python bench/parallel.py [--smoke]

Both daemon runs are the real `hpod daemon --until-idle` on the same job: one architecture,
fixed epochs, no pruning and no early stop, so every trial does the same work and only the
workers differ. The storage side runs hpod's real per-trial path (`run_trial`: ask, worker
record, beat, surplus check, tell, log line) on a trivial objective, against a throwaway
PostgreSQL cluster on a Unix socket and a SQLite file, alternating, on the same machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna

from hpod.records import TrialLog
from hpod.state import StateDir
from hpod.storage import open_storage
from hpod.supervisor.trials import run_trial
from tests.postgres import cluster

JOB = """
name: parallel
grid: {{d_model: [32], n_layers: [3], n_heads: [2], d_ff_mult: [2], tolerance: 0.25}}
search: {{n_trials: {trials}, n_startup_trials: 2, epochs: [{epochs}], pruner: none, warmup_steps: [10, 20, 10],
         forced_extremes: false, final_seeds: 0}}
train: {{patience: 1000}}
"""


def hpod(state: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "hpod", *args, "--state-dir", str(state)], check=True, capture_output=True)


def trials_per_hour(root: Path, workers: int, trials: int, epochs: int) -> float:
    """Wall time of the daemon that runs the study, as trials per hour."""
    state = root / f"workers-{workers}"
    job = root / f"job-{workers}.yaml"
    job.write_text(JOB.format(trials=trials, epochs=epochs))
    hpod(state, "enqueue", "--budget", "30K", "--horizon", "h1", "--job", str(job))
    start = time.perf_counter()
    hpod(state, "daemon", "--until-idle", "--workers", str(workers), "--devices", "cpu")
    return trials / (time.perf_counter() - start) * 3600


class Trivial:
    checkpoints = None

    def __call__(self, trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            trial.report(x, step)
        return x

    def after_trial(self, study, trial) -> None:
        return None


def per_trial_ms(url: str, logs: Path, trials: int) -> float:
    study = optuna.create_study(storage=open_storage(url), study_name="overhead", load_if_exists=True)
    log = TrialLog(logs / "overhead.log")
    start = time.perf_counter()
    for _ in range(trials):
        run_trial(study, Trivial(), [log], target=10**9)
    return (time.perf_counter() - start) / trials * 1000


def main(smoke: bool) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cores = len(os.sched_getaffinity(0))
    trials, epochs, overhead_trials = (2, 1, 5) if smoke else (8, 6, 200)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = trials_per_hour(root, 1, trials, epochs)
        many = trials_per_hour(root, cores, trials, epochs)
        print(f"trials per hour, {trials} trials of {epochs} epochs at 30K, {cores} cores:")
        print(f"  1 worker x {cores} threads   {one:8.0f}")
        print(f"  {cores} workers x 1 thread   {many:8.0f}   ratio {many / one:.2f}x")
        state = StateDir(root / "storage").create()
        for database in cluster():
            pg = database.new_database()
            sqlite = f"sqlite:///{state.optuna_db}"
            runs = {"sqlite": [], "postgresql": []}
            for _ in range(2):  # alternate, so that a slow spell of the machine hits both
                runs["sqlite"].append(per_trial_ms(sqlite, state.logs, overhead_trials // 2))
                runs["postgresql"].append(per_trial_ms(pg, state.logs, overhead_trials // 2))
        sq, pq = (sum(v) / len(v) for v in runs.values())
        print(f"per trial, hpod's trial path on a trivial objective, {overhead_trials} trials each:")
        print(f"  SQLite      {sq:6.1f} ms (halves {runs['sqlite'][0]:.1f}, {runs['sqlite'][1]:.1f})")
        print(f"  PostgreSQL  {pq:6.1f} ms (halves {runs['postgresql'][0]:.1f}, {runs['postgresql'][1]:.1f})   "
              f"ratio {pq / sq:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv)
