"""Running trials of a study: a new one, or one a stopped or dead process left RUNNING
(continued in place from its checkpoint), failure streaks, and orphan finding by process liveness.
The study layer knows nothing of processes; this is where trials meet them."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from hpod.errors import HpodError
from hpod.records import WORKER, TrialLog
from hpod.state import StateDir
from hpod.study.objective import Objective
from hpod.study.plan import finished_count
from hpod.supervisor.liveness import is_dead, is_remote, process_id
from hpod.trial import checkpoint as checkpoint_io
from hpod.trial.train import Interrupted

log = logging.getLogger(__name__)


class StudyFailed(HpodError):
    """Too many trials in a row failed: the job, not one trial, is broken."""

    exit_code = 1


def run_trial(
    study: optuna.Study,
    objective: Objective,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    resume: int | None = None,
    on_start: Callable[[int], None] | None = None,
) -> FrozenTrial:
    """Run one trial by ask and tell: a new one, or trial `resume` left RUNNING by a stopped or
    dead process, which keeps its parameters. An exception fails the trial, not the caller;
    Interrupted leaves it RUNNING, to be resumed."""
    trial = study.ask() if resume is None else reopen_trial(study, resume)
    trial.set_user_attr(WORKER, process_id())  # lets a restarted daemon tell an orphan from a live trial
    if on_start is not None:
        on_start(trial.number)
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        frozen = study.tell(trial, state=TrialState.PRUNED)
    except Interrupted:
        raise
    except Exception:
        log.warning("trial %d failed", trial.number, exc_info=True)
        frozen = study.tell(trial, state=TrialState.FAIL)
    else:
        frozen = study.tell(trial, value)
    objective.after_trial(study, frozen)
    for callback in callbacks:
        callback(study, frozen)
    return frozen


def reopen_trial(study: optuna.Study, number: int) -> Trial:
    """A Trial handle on an existing RUNNING trial; its suggest calls return its stored params."""
    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.state != TrialState.RUNNING:
        raise HpodError(f"trial {number} of {study.study_name} is {frozen.state.name}, not RUNNING")
    return Trial(study, frozen._trial_id)  # Optuna keeps the storage id private; optimize() does the same


def orphaned_trials(study: optuna.Study) -> list[int]:
    """RUNNING trials whose worker process is gone: to be resumed, not run anew."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t.number for t in running if is_dead(t.user_attrs.get(WORKER))]


def fail_trial(study: optuna.Study, number: int, reason: str, state: StateDir) -> FrozenTrial:
    """Record a RUNNING trial whose worker died as failed, with the reason. A worker killed
    outright (the OOM killer's SIGKILL) wrote no log line and left its checkpoints, tens of GB at
    2B: write the one, drop the others (a failed trial is never resumed, nor the best)."""
    trial = reopen_trial(study, number)
    trial.set_user_attr("fail_reason", reason)
    frozen = study.tell(trial, state=TrialState.FAIL)
    TrialLog(state.logs / f"{study.study_name}.log")(study, frozen)
    for path in (checkpoint_io.resume_path, checkpoint_io.best_path):
        path(state.checkpoints, study.study_name, number).unlink(missing_ok=True)
    return frozen


def run_study(
    study: optuna.Study,
    objective: Objective,
    target: int,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> None:
    """Run trials in this process until `target` have finished, continuing first any trial that
    a stopped or killed run left behind; a failing trial fails alone, unless `max_failures`
    fail in a row, which fails the study."""
    failures = 0
    while finished_count(study) < target:
        trial = run_trial(study, objective, callbacks, resume=next(iter(orphaned_trials(study)), None))
        gc.collect()  # trials share this process: free the last one's model before the next is built
        failures = failures + 1 if trial.state == TrialState.FAIL else 0
        reason = trial.user_attrs.get("fail_reason", "unknown")
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
    workers = [t.user_attrs["worker"] for t in running if "worker" in t.user_attrs]
    while any(not is_dead(w) and not is_remote(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
