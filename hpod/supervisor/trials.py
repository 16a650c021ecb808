"""Running trials of a study: a new one, or one a stopped or dead process left RUNNING
(continued in place from its checkpoint), failure streaks, and orphan finding by process liveness.
The study layer knows nothing of processes; this is where trials meet them."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, Trial, TrialState

from hpod.errors import HpodError
from hpod.records import BEAT, FAIL_REASON, SURPLUS, TRACEBACK, WORKER, TrialLog, failure_reason
from hpod.state import StateDir, open_no_follow, refuse_link
from hpod.study.objective import Objective
from hpod.study.plan import FINISHED, finished_count
from hpod.supervisor.liveness import is_dead, is_remote, process_id
from hpod.trial import checkpoint as checkpoint_io
from hpod.trial.train import Interrupted

log = logging.getLogger(__name__)
BEAT_S = 5.0  # how often a running trial says it is alive, for other hosts on a shared storage


class StudyFailed(HpodError):
    """Too many trials in a row failed: the job, not one trial, is broken."""

    exit_code = 1


def run_trial(
    study: optuna.Study,
    objective: Objective,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    resume: int | None = None,
    on_start: Callable[[int], None] | None = None,
    target: int | None = None,
) -> FrozenTrial:
    """Run one trial by ask and tell: a new one, or trial `resume` left RUNNING by a stopped or
    dead process, which keeps its parameters. An exception fails the trial, not the caller;
    Interrupted leaves it RUNNING, to be resumed. With a `target`, a new trial that other
    workers or hosts have made surplus yields at once (see `is_surplus`)."""
    trial = study.ask() if resume is None else reopen_trial(study, resume)
    trial.set_user_attr(WORKER, process_id())  # lets a restarted daemon tell an orphan from a live trial
    if resume is None and target is not None and is_surplus(study, trial.number, target):
        trial.set_user_attr(SURPLUS, True)
        trial.set_user_attr(FAIL_REASON, f"surplus: {target} trials before it finished or are running")
        return study.tell(trial, state=TrialState.FAIL)
    if on_start is not None:
        on_start(trial.number)
    beat = Beat(trial)
    try:
        frozen = train_and_tell(study, trial, objective)
    except UpdateFinishedTrialError:
        frozen = study.get_trials(deepcopy=False)[trial.number]  # or a tell stored before the storage went away
        if frozen.state == TrialState.FAIL:
            log.warning("trial %d was failed by another host while this one was silent; dropped", trial.number)
            if objective.checkpoints is not None:
                drop_checkpoints(objective.checkpoints, study.study_name, trial.number)
            return frozen
    finally:
        beat.stop()
    objective.after_trial(study, frozen)
    for callback in callbacks:
        callback(study, frozen)
    return frozen


def train_and_tell(study: optuna.Study, trial: Trial, objective: Objective) -> FrozenTrial:
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED)
    except (Interrupted, UpdateFinishedTrialError):
        raise
    except Exception as exc:
        record_exception(trial, exc, objective.tracebacks)
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, value)


def record_exception(trial: Trial, exc: Exception, tracebacks: Path | None) -> None:
    """A trial that raised keeps why (`Type: message`, unless the objective said more) and,
    with a folder for them, its full traceback in a file that its log line names."""
    if FAIL_REASON not in trial.user_attrs:  # an out-of-memory reason names the architecture
        trial.set_user_attr(FAIL_REASON, failure_reason(exc))
    if tracebacks is None:
        log.warning("trial %d failed: %s", trial.number, failure_reason(exc), exc_info=exc)
        return
    path = write_traceback(tracebacks, f"{trial.study.study_name}.trial-{trial.number}", exc)
    trial.set_user_attr(TRACEBACK, str(path))
    log.warning("trial %d failed: %s (traceback: %s)", trial.number, failure_reason(exc), path)


def write_traceback(folder: Path, name: str, exc: BaseException) -> Path:
    """The exception's full traceback in `folder/name.txt`, for the morning after."""
    folder.mkdir(mode=0o770, parents=True, exist_ok=True)  # the group's only where the umask allows (state.py)
    path = refuse_link(folder) / f"{name}.txt"
    with os.fdopen(open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
        f.write("".join(traceback.format_exception(exc)))
    return path


def is_surplus(study: optuna.Study, number: int, target: int) -> bool:
    """Whether the trials numbered below `number`, finished or running, already make the target.
    Workers and hosts that see one trial missing all start one; the storage numbers them, so
    the later ones yield and the study ends at its target exactly, not over it."""
    live = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    return sum(t.number < number for t in live) >= target


def reopen_trial(study: optuna.Study, number: int) -> Trial:
    """A Trial handle on an existing RUNNING trial; its suggest calls return its stored params."""
    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.state != TrialState.RUNNING:
        raise HpodError(f"trial {number} of {study.study_name} is {frozen.state.name}, not RUNNING")
    return Trial(study, frozen._trial_id)  # Optuna keeps the storage id private; optimize() does the same


def orphaned_trials(study: optuna.Study) -> list[int]:
    """RUNNING trials whose worker process is gone: to be resumed, not run anew."""
    return orphans(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def orphans(trials: Sequence[FrozenTrial]) -> list[int]:
    return [t.number for t in trials if t.state == TrialState.RUNNING and is_dead(t.user_attrs.get(WORKER))]


def fail_trial(study: optuna.Study, number: int, reason: str, state: StateDir) -> FrozenTrial:
    """Record a RUNNING trial whose worker died as failed, with the reason. A worker killed
    outright (the OOM killer's SIGKILL) wrote no log line and left its checkpoints, tens of GB at
    2B: write the one, drop the others (a failed trial is never resumed, nor the best)."""
    trial = reopen_trial(study, number)
    trial.set_user_attr(FAIL_REASON, reason)
    frozen = study.tell(trial, state=TrialState.FAIL)
    TrialLog(state.logs / f"{study.study_name}.log")(study, frozen)
    drop_checkpoints(state.checkpoints, study.study_name, number)
    return frozen


def fail_if_running(study: optuna.Study, number: int, reason: str, state: StateDir) -> None:
    """Fail the trial of a worker that died without telling it (killed, crashed, hung)."""
    if study.get_trials(deepcopy=False)[number].state == TrialState.RUNNING:
        fail_trial(study, number, reason, state)


def drop_checkpoints(checkpoints: Path, study_name: str, number: int) -> None:
    """A failed trial is never resumed nor the best: its resume state and weights, tens of GB
    at 2B, go."""
    for path in (checkpoint_io.resume_path, checkpoint_io.best_path):
        path(checkpoints, study_name, number).unlink(missing_ok=True)


def drop_failed_checkpoints(study: optuna.Study, checkpoints: Path) -> None:
    """A host that comes back after another failed its silent trials finds their checkpoints
    still on its disk: they go, rather than a trial being finished twice."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        drop_checkpoints(checkpoints, study.study_name, trial.number)


def run_study(
    study: optuna.Study,
    objective: Objective,
    target: int,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> None:
    """Run trials in this process until `target` have finished, continuing first any trial that
    a stopped or killed run left behind; a failing trial fails alone, unless `max_failures`
    fail in a row, which fails the study. On a shared storage it ends once the trials running
    elsewhere make the target."""
    failures = 0
    while finished_count(study) < target:
        trial = run_trial(study, objective, callbacks, next(iter(orphaned_trials(study)), None), target=target)
        if trial.user_attrs.get(SURPLUS):
            log.info("%s: the trials running on other hosts make the target", study.study_name)
            return
        gc.collect()  # trials share this process: free the last one's model before the next is built
        failures = failures + 1 if trial.state == TrialState.FAIL else 0
        reason = trial.user_attrs.get(FAIL_REASON, "unknown")
        check_failures(study.study_name, failures, objective.plan.job.search.max_failures, reason)


def check_failures(study_name: str, failures: int, limit: int, last_reason: str | None) -> None:
    """Fail the study once `limit` trials in a row have failed: the job, not a trial, is broken."""
    if failures >= limit:
        raise StudyFailed(f"study {study_name}: {failures} trials in a row failed (last: {last_reason})")


def wait_for_old_workers(study: optuna.Study, timeout_s: float = 30.0) -> None:
    """A daemon killed outright leaves its worker to notice and exit; resuming that worker's
    trial before it has gone would run it twice."""
    deadline = time.monotonic() + timeout_s
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    workers = [t.user_attrs[WORKER] for t in running if WORKER in t.user_attrs]
    while any(not is_dead(w) and not is_remote(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)


class Beat:
    """A thread that stamps the trial's BEAT attribute every `interval` seconds until stopped;
    it dies with the worker, which is what lets other hosts see that a host is gone."""

    def __init__(self, trial: Trial, interval: float = BEAT_S):
        self.trial, self.interval = trial, interval  # until the first beat, the trial's start stands for one
        self.stopped = threading.Event()
        threading.Thread(target=self.run, daemon=True, name="beat").start()

    def stamp(self) -> None:
        self.trial.set_user_attr(BEAT, time.time())

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(Exception):  # a storage hiccup must not end the trial; the next beat retries
                self.stamp()

    def stop(self) -> None:
        self.stopped.set()
