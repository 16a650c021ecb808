"""hpod's own bookkeeping: the daemon's per-trial path against a bare `study.optimize` loop on a
trivial objective, the cost of a trial's worker process, and `hpod status` latency with a
full queue.

    python bench/overhead.py [--smoke]

The daemon path is the real `Daemon.run` (claim, lease, scheduler, study, orphan check, trial
log with fsync, progress in the queue) with `start_worker` running each trial in-process on a
trivial objective, so what is measured is bookkeeping, not training. The worker process, which
the real daemon starts per trial for isolation, is measured on its own.
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna
from optuna.distributions import FloatDistribution

from hpod.job import load_job
from hpod.records import TrialLog
from hpod.state import StateDir
from hpod.storage import open_storage
from hpod.study.plan import distributions, plan_study, suggest
from hpod.supervisor.daemon import Daemon, DaemonOptions
from hpod.supervisor.enqueue import prepare_jobs
from hpod.supervisor.handle import TrialOutcome
from hpod.supervisor.held_job import HeldJob
from hpod.supervisor.messages import Outcome, Phase
from hpod.supervisor.queue import Queue
from hpod.supervisor.slots import Slot
from hpod.supervisor.trials import run_trial

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "jobs" / "tiny.yaml"


class TrivialObjective:
    """Samples the study's real search space and returns at once."""

    def __init__(self, plan):
        self.plan = plan
        self.space = distributions(plan.job.search, [e.arch.key for e in plan.grid])

    def __call__(self, trial: optuna.Trial) -> float:
        params = {name: suggest(trial, name, dist) for name, dist in self.space.items()}
        return params["learning_rate"] * 1000 + params["dropout"]

    def after_trial(self, study, trial) -> None:
        return None


class InProcessDaemon(Daemon):
    """The real daemon loop (claim, lease, held job, target, progress), with each trial run in
    this process on the trivial objective instead of in a worker."""

    def start_worker(self, job: HeldJob, task: tuple[Phase, int | None], slot: Slot) -> None:
        phase, resume = task
        if phase == Phase.EVALUATE:  # a worker's evaluation of val and test: not per-trial bookkeeping
            job.record(TrialOutcome(None, Outcome.EVALUATED))
            return
        log = TrialLog(self.state.logs / f"{job.plan.name}.log")
        target = job.target if job.may_race(len(self.slots)) else None
        trial = run_trial(job.study, TrivialObjective(job.plan), [log], resume, target=target)
        job.record(TrialOutcome(trial.number, Outcome(trial.state.name)))
        self.record_progress(job)


def daemon_per_trial(trials: int, root: Path) -> float:
    state = StateDir(root / "daemon").create()
    job = load_job(JOB).with_overrides(trials=trials)
    job = dataclasses.replace(job, search=dataclasses.replace(job.search, final_seeds=0))  # the search loop alone
    rows = prepare_jobs(job, [20_000], [1])
    Queue(state.queue_db).enqueue(rows)
    start = time.perf_counter()
    InProcessDaemon(state, DaemonOptions(until_idle=True)).run()
    return (time.perf_counter() - start) / trials


def bare_per_trial(trials: int, root: Path) -> float:
    """The same search space and TPE settings, in a plain `study.optimize` loop."""
    plan = plan_study(load_job(JOB), 20_000, 1)
    sampler = optuna.samplers.TPESampler(n_startup_trials=plan.job.search.n_startup_trials, seed=0)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{root / 'bare.db'}"), sampler=sampler)
    start = time.perf_counter()
    study.optimize(TrivialObjective(plan), n_trials=trials)
    return (time.perf_counter() - start) / trials


def command_seconds(command: list[str], repeats: int) -> float:
    """Median wall time of a command."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def full_queue(root: Path, jobs: int, trials: int) -> StateDir:
    state = StateDir(root / "status").create()
    row = prepare_jobs(load_job(JOB), [20_000], [1])[0]
    Queue(state.queue_db).enqueue([row | {"study_name": f"tiny-20K-h1-{i}"} for i in range(jobs)], force=True)
    study = optuna.create_study(storage=open_storage(state.storage_url(None)), study_name="tiny-20K-h1-0")
    dist = {"x": FloatDistribution(0, 1)}
    study.add_trials(
        [optuna.trial.create_trial(params={"x": i / trials}, distributions=dist, value=i) for i in range(trials)]
    )
    return state


def main(smoke: bool) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials, jobs, repeats = (10, 20, 1) if smoke else (200, 1000, 5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bare = bare_per_trial(trials, root)
        ours = daemon_per_trial(trials, root)
        print(f"per trial, {trials} trials, SQLite storage, trivial objective:")
        print(f"  bare study.optimize {bare * 1000:7.1f} ms")
        print(f"  hpod daemon path    {ours * 1000:7.1f} ms   ratio {ours / bare:.2f}x (target <= 1.5x)")
        python = command_seconds([sys.executable, "-c", "pass"], repeats)
        worker = command_seconds([sys.executable, "-c", "import hpod.supervisor.worker"], repeats)
        print(f"  + worker process start (import hpod.supervisor.worker) {worker:.2f} s; bare python {python:.2f} s")
        state = full_queue(root, jobs, trials * 5)
        status = command_seconds([sys.executable, "-m", "hpod", "status", "--state-dir", str(state.root)], repeats)
        as_json = command_seconds(
            [sys.executable, "-m", "hpod", "status", "--json", "--state-dir", str(state.root)], repeats
        )
        print(f"hpod status with {jobs} jobs and a {trials * 5}-trial study (median of {repeats}):")
        print(f"  hpod status {status:.2f} s, --json {as_json:.2f} s (target < 0.5 s); ratio to a bare interpreter "
              f"{status / python:.1f}x, {as_json / python:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv)
