"""Several hosts on one study: each running trial beats (a timestamp in the storage), a trial
whose host has gone silent past the grace period is failed by whichever daemon sees it, and
`hpod status` counts each host's trials.

The beat is hpod's own user attribute rather than Optuna's heartbeat: Optuna's stale-trial check
fails every stale trial, this host's own orphans included (which hpod resumes from their
checkpoints instead), says nothing of whose trial it was or for how long it was silent, and
keeps its beat times behind private storage methods.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hpod.errors import HpodError
from hpod.records import BEAT, WORKER
from hpod.state import StateDir
from hpod.study.plan import FINISHED
from hpod.supervisor.liveness import host_of, is_remote
from hpod.supervisor.trials import fail_trial

log = logging.getLogger(__name__)
DEFAULT_GRACE_S = 600.0  # silence after which another host fails the trial


def last_sign(trial: FrozenTrial) -> float:
    """When the trial was last known alive: its beat, else its start."""
    beat = trial.user_attrs.get(BEAT)
    if beat is not None:
        return float(beat)
    return trial.datetime_start.timestamp() if trial.datetime_start is not None else time.time()


def silent_trials(study: optuna.Study, grace_s: float, now: float | None = None) -> list[tuple[int, str, float]]:
    """(number, host, seconds silent) of RUNNING trials of other hosts silent past `grace_s`;
    this host's own trials are never among them (their orphans are resumed, not failed)."""
    now = time.time() if now is None else now
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER)
        if worker is None or not is_remote(worker):
            continue
        silent = now - last_sign(trial)
        if silent > grace_s:
            found.append((trial.number, host_of(worker), silent))
    return found


def fail_silent_trials(study: optuna.Study, grace_s: float, state: StateDir) -> list[int]:
    """Fail the trials of hosts silent past the grace period, so that the study goes on; a trial
    another daemon failed first is left as it is."""
    failed = []
    for number, host, silent in silent_trials(study, grace_s):
        reason = f"host {host} silent for {silent:.0f} s"
        try:
            fail_trial(study, number, reason, state)
        except (HpodError, UpdateFinishedTrialError) as exc:  # another host got there first
            log.info("trial %d of %s: not failed (%s)", number, study.study_name, exc)
            continue
        log.warning("trial %d of %s: %s; failed so the study goes on", number, study.study_name, reason)
        failed.append(number)
    return failed


def trials_by_host(study: optuna.Study) -> dict[str, dict[str, int]]:
    """Per host (from each trial's recorded worker): its running and finished trials."""
    running, finished = Counter(), Counter()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, *FINISHED)):
        worker = trial.user_attrs.get(WORKER)
        host = host_of(worker) if worker else "unknown"
        (running if trial.state == TrialState.RUNNING else finished)[host] += 1
    return {host: {"running": running[host], "finished": finished[host]} for host in sorted(running | finished)}
