"""A trial's own process. The daemon starts one per trial, so that an OOM kill, a crash or a
hang costs that trial alone.

Protocol (messages.py): the daemon writes a `Task` as the first line of the worker's stdin, then
commands (`pause`, `resume`, `stop`); the worker writes `Report`s, one per line, to the file
descriptor named on its command line. End of stdin means the daemon died: the worker
exits at once, so no orphan keeps training a trial that a restarted daemon will resume.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO

import optuna
import torch

from hpod.errors import HpodError
from hpod.guard.policy import Guard
from hpod.guard.sensors import default_readers, read_all
from hpod.job import guard_overrides
from hpod.logs import plain_handler
from hpod.records import TrialLog, failure_reason, outcome_of
from hpod.results.evaluation import ensure_baselines, evaluate_study
from hpod.state import StateDir
from hpod.study.objective import Objective, TrialHooks, TrialResources
from hpod.study.plan import best_trial, open_study
from hpod.study.seeds import SEED_OFFSET, existing_seed_study, open_seed_study
from hpod.supervisor.liveness import host_name
from hpod.supervisor.messages import Command, Outcome, Phase, Report, ReportKind, Task
from hpod.supervisor.outage import OUTAGE_LIMIT_S, Outage, open_patient_storage
from hpod.supervisor.trials import run_trial, write_traceback
from hpod.trial.data import load_dataset
from hpod.trial.probe import ChoiceCache
from hpod.trial.train import EpochRecord, Interrupted

log = logging.getLogger(__name__)
PARENT_GONE_EXIT = 3
STEP_REPORT_INTERVAL_S = 1.0  # progress reports double as the daemon's hang watchdog


class Controls:
    """What the daemon asked of this trial; read between optimizer steps."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.run = threading.Event()
        self.run.set()

    def listen(self, commands: IO[str]) -> None:
        """Apply commands from the daemon until its end of the pipe closes."""
        for line in commands:
            command = line.strip()
            if command == Command.STOP:
                self.request_stop()
            elif command == Command.PAUSE:
                self.run.clear()
            elif command == Command.RESUME:
                self.run.set()
        os._exit(PARENT_GONE_EXIT)

    def request_stop(self) -> None:
        self.stop.set()
        self.run.set()  # a paused trial must wake up to stop

    def checkpoint(self) -> None:
        """Block while paused; raise Interrupted when asked to stop."""
        while not self.run.wait(timeout=0.5):
            pass
        self.unless_stopped()

    def unless_stopped(self) -> None:
        """Raise Interrupted when asked to stop (also between tries of an unreachable storage)."""
        if self.stop.is_set():
            raise Interrupted("stop requested")


class Reporter:
    def __init__(self, fd: int):
        self.out = os.fdopen(fd, "w", buffering=1)
        self.last_step = 0.0
        self.lock = threading.Lock()  # the trial's beat thread reports a storage outage too

    def send(self, kind: ReportKind, **fields) -> None:
        with self.lock:
            self.out.write(Report(kind, **fields).encode() + "\n")

    def step(self, trial: int, epoch: int, step: int) -> None:
        now = time.monotonic()
        if now - self.last_step >= STEP_REPORT_INTERVAL_S:
            self.last_step = now
            self.send(ReportKind.STEP, trial=trial, epoch=epoch, step=step)


def run_task(task: Task, controls: Controls, reporter: Reporter) -> int:
    """One trial of the task's phase: `search` (a search trial), `seeds` (a seed run of the
    search's best), or `evaluate` (the study's val and test evaluation, no trial)."""
    state, slot = StateDir(Path(task.state_root)), task.slot
    if slot.threads is not None:
        torch.set_num_threads(slot.threads)
    plan = task.job.plan
    dataset = load_dataset(plan.job.data, plan.horizon)
    url = state.storage_url(task.job.storage)
    storage = open_patient_storage(url, outage(url, task, reporter), controls.unless_stopped)
    study = open_study(plan, storage, salt=f":{host_name()}:{slot.index}")
    ensure_baselines(study, dataset)
    if task.phase == Phase.EVALUATE:
        seeds = existing_seed_study(plan.name, storage, best_trial(study))
        evaluate_study(plan, study, dataset, state.checkpoints, seeds)
        reporter.send(ReportKind.FINISHED, outcome=Outcome.EVALUATED)
        return 0
    if task.phase == Phase.SEEDS:
        study = open_seed_study(plan, storage, best_trial(study))
    current = {"trial": task.resume}

    def after_step(epoch: int, step: int) -> None:
        reporter.step(current["trial"], epoch, step)
        controls.checkpoint()

    def on_epoch(number: int, record: EpochRecord) -> None:
        reporter.send(ReportKind.EPOCH, trial=number, epoch=record.epoch, val_loss=record.val_loss)

    def on_start(number: int) -> None:
        current["trial"] = number
        reporter.send(ReportKind.STARTED, trial=number)

    def on_setup(number: int, epochs: int, steps: int) -> None:
        reporter.send(ReportKind.SETUP, trial=number, epochs=epochs, steps=steps)

    def on_pause(reason: str | None) -> None:
        if reason is None:
            reporter.send(ReportKind.RESUMED, trial=current["trial"])
        else:
            reporter.send(ReportKind.PAUSED, trial=current["trial"], reason=reason, since=time.time())

    readers = default_readers()
    guard_spec = guard_overrides(plan.job.guard, task.guard)
    resources = TrialResources(
        checkpoints=state.checkpoints,
        tracebacks=state.tracebacks,
        guard=Guard(guard_spec, lambda: read_all(readers), notify=on_pause),
        choices=ChoiceCache(state.micro_batches),
        seed_offset=SEED_OFFSET if task.phase == Phase.SEEDS else 0,
        device=slot.device,
        memory_share=slot.share,
    )
    objective = Objective(plan, dataset, study.sampler, TrialHooks(on_epoch, after_step, on_setup), resources)
    try:
        log_file = TrialLog(state.logs / f"{study.study_name}.log")
        frozen = run_trial(study, objective, [log_file], task.resume, on_start, task.target)
    except Interrupted:
        reporter.send(ReportKind.INTERRUPTED, trial=current["trial"])
        return 0
    outcome, reason = outcome_of(frozen)
    reporter.send(ReportKind.FINISHED, trial=frozen.number, outcome=Outcome(outcome), reason=reason)
    return 0


def outage(url: str, task: Task, reporter: Reporter) -> Outage:
    """The worker's wait for an unreachable storage, told to the daemon as a pause (which the
    hang limit does not count) until the storage answers again."""

    def on_change(reason: str | None) -> None:
        if reason is None:
            reporter.send(ReportKind.RESUMED)
        else:
            reporter.send(ReportKind.PAUSED, reason=reason, since=time.time())

    limit = OUTAGE_LIMIT_S if task.outage_limit_s is None else task.outage_limit_s
    return Outage.of_storage(url, limit, on_change)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, handlers=[plain_handler(sys.stderr)])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reporter = Reporter(int(argv[0]))
    line, task = sys.stdin.readline(), None
    controls = Controls()
    threading.Thread(target=controls.listen, args=(sys.stdin,), daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT):  # systemd and Ctrl-C reach the worker too
        signal.signal(signum, lambda *_: controls.request_stop())
    try:
        task = Task.decode(line)
        return run_task(task, controls, reporter)
    except HpodError as exc:
        reporter.send(ReportKind.ERROR, reason=str(exc))
        return 2
    except Exception as exc:  # outside a trial (its task, set-up, evaluation): the daemon records why
        if task is None:  # a task it cannot read: named by what of it can be read
            root, what = json.loads(line).get("state_root", "."), "task"
        else:
            root, what = task.state_root, f"{task.job.study_name}.{task.phase}"
        path = write_traceback(StateDir(Path(root)).tracebacks, f"{what}-worker-{os.getpid()}", exc)
        log.error("worker failed: %s (traceback: %s)", failure_reason(exc), path)
        reporter.send(ReportKind.CRASHED, reason=f"{failure_reason(exc)} (traceback: {path})")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
