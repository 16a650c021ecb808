"""A job the daemon holds, on its way through its phases: the search to its target, the seed
runs of its best, the evaluation. It says which trial a free worker slot should run next, and
when the job ends; the daemon starts and watches the workers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from hpod.errors import HpodError
from hpod.records import BASELINES
from hpod.state import StateDir, StorageUnreachable, is_unreachable, open_storage
from hpod.study.plan import FINISHED, best_trial, finished_count, open_study
from hpod.study.seeds import open_seed_study
from hpod.supervisor.handle import TrialOutcome, TrialProcess, WorkerWatch
from hpod.supervisor.hosts import fail_silent_trials
from hpod.supervisor.job_row import plan_from_row
from hpod.supervisor.outage import OUTAGE_LIMIT_S, Outage
from hpod.supervisor.slots import Slot
from hpod.supervisor.trials import check_failures, drop_failed_checkpoints, orphans, wait_for_old_workers

log = logging.getLogger(__name__)
Verdict = tuple[str, str | None]  # the job's end state and its note
DONE: Verdict = ("done", None)
SILENCE_CHECK_S = 15.0  # how often a held study is searched for trials of silent hosts
LOST_LIMIT = 10  # workers in a row dying before their trial began (killed at start-up) fail the job


@dataclass
class Running:
    """One worker in flight: the job and study it serves, its slot, what the daemon knows of it."""

    job: HeldJob
    study: optuna.Study | None  # None for the evaluation, which runs no trial
    phase: str
    slot: Slot
    worker: TrialProcess
    watch: WorkerWatch
    trial_pause: tuple[str, float] | None = None  # the worker's guard: (reason, since)


@dataclass
class HeldJob:
    row: dict
    state: StateDir
    outage_limit_s: float = OUTAGE_LIMIT_S
    phase: str = "search"  # search → seeds → evaluate → ended
    note: str | None = None  # the search's verdict note (a timeout), kept for the job's end
    failures: int = 0
    lost: int = 0  # workers in a row that died before their trial began
    ending: Verdict | None = None  # set once no new trial of this phase may start
    running: list[Running] = field(default_factory=list)
    held_at: float = field(default_factory=time.monotonic)  # since the last lease extension
    started: float = field(default_factory=time.monotonic)
    last_silence_check: float = 0.0
    retry_at: float = 0.0  # while its storage is away: when the daemon next tries it
    reachable_since: float = float("-inf")  # when its storage answered again after an outage

    def __post_init__(self) -> None:
        self.plan = plan_from_row(self.row)
        self.outage = Outage.of_storage(self.state.storage_url(self.row["storage"]), self.outage_limit_s)
        self.storage, self.search, self.study, self.target = None, None, None, self.row["n_trials"]

    def open(self) -> None:
        """Open its storage and study; the daemon tries again, later, while the storage is away."""
        self.state.refuse_links(self.name)
        self.storage = open_storage(self.state.storage_url(self.row["storage"]))
        self.search = self.study = open_study(self.plan, self.storage)
        wait_for_old_workers(self.search)
        drop_failed_checkpoints(self.search, self.state.checkpoints)

    def reach(self) -> bool:
        """Try the storage again after an outage: open the study, or make one cheap query."""
        if self.search is None:
            self.open()
        else:
            self.storage.get_study_id_from_name(self.name)
        self.outage.recovered()
        self.reachable_since = time.monotonic()
        return True

    def meet_error(self, exc: Exception) -> bool:
        """A step of it raised. Its storage being away is waited out: tried again after a
        backoff, failing the job past the outage's limit; anything else fails the job. True when
        an outage began (the daemon records it)."""
        if not is_unreachable(exc):
            self.ending = failure(exc)
            return False
        began = self.outage.since is None
        try:
            self.retry_at = time.monotonic() + self.outage.failed(exc)
        except StorageUnreachable as gone:
            self.ending = "failed", str(gone)
            return False
        return began

    @property
    def waiting(self) -> bool:
        """Its storage is away: none of its trials starts until the next try answers."""
        return self.outage.since is not None

    @property
    def id(self) -> int:
        return self.row["id"]

    @property
    def name(self) -> str:
        return self.row["study_name"]

    def result(self) -> Verdict | None:
        """The job's end state once it has ended and no worker of it is left; else None."""
        if self.running or self.ending is None:
            return None
        return self.ending if self.ending[0] != "done" or self.phase == "ended" else None

    def check(self, stopping: bool, control: str | None, run_s: float) -> None:
        """Decide whether this phase may start more trials; move to the next phase once its last
        worker is done. A stop or a pause ends the job between phases too; a failure stands."""
        if self.phase == "ended":
            return
        halted = self.halted(stopping, control)
        if halted is not None and (self.ending is None or self.ending[0] == "done"):
            self.ending = halted
        if self.waiting or self.search is None:
            return
        if self.ending is None and self.phase in ("search", "seeds"):
            self.ending = self.reached(run_s)
        if self.ending is not None and self.ending[0] == "done" and not self.running:
            self.advance()

    def halted(self, stopping: bool, control: str | None) -> Verdict | None:
        if stopping:
            return "interrupted", None
        if control is not None:
            return {"pause": "paused", "cancel": "cancelled"}[control], None
        return None

    def reached(self, run_s: float) -> Verdict | None:
        """Whether the phase's target (counting every host's finished trials) or the job's
        timeout is reached."""
        finished = finished_count(self.study)
        if finished >= self.target:
            return DONE
        timeout = self.row["timeout_s"]
        if timeout is not None and run_s >= timeout:
            return "done", f"timed out after {timeout / 3600:g} h with {finished}/{self.target} trials of {self.name}"
        return None

    def advance(self) -> None:
        """search → seeds (when the job asks for them) → evaluate; the evaluation's end ends the job."""
        best = best_trial(self.search)
        if self.phase == "search" and self.plan.job.search.final_seeds and best is not None and self.ending == DONE:
            self.study = open_seed_study(self.plan, self.storage, best)
            self.phase, self.target, self.failures, self.ending = "seeds", self.plan.job.search.final_seeds, 0, None
        elif self.phase in ("search", "seeds"):
            self.phase, self.note, self.ending = "evaluate", self.ending[1], None

    def may_race(self, workers: int) -> bool:
        """Whether another worker or host may start a trial of this study at the same time, so a
        new trial must check that it is not surplus (a query per trial, spared otherwise)."""
        return workers > 1 or self.row["storage"] is not None

    def fail_silent_hosts(self, grace_s: float) -> None:
        """Every few seconds (at most half the grace period), fail the trials of other hosts
        silent past `grace_s`, so that the study goes on without them."""
        if (
            self.waiting
            or self.study is None
            or time.monotonic() - self.last_silence_check < min(SILENCE_CHECK_S, grace_s / 2)
        ):
            return
        if time.monotonic() - self.reachable_since < grace_s:
            return  # after an outage every host's beats are old: give them the grace to resume
        self.last_silence_check = time.monotonic()
        fail_silent_trials(self.study, grace_s, self.state)

    def next_task(self) -> tuple[str, int | None] | None:
        """(phase, trial to resume or None for a new one) for a free slot, or None when this job
        has nothing to start now: its trials to the target are all running, or it is ending."""
        if self.ending is not None or self.waiting:
            return None
        if self.phase == "evaluate":
            return None if self.running else ("evaluate", None)
        if self.phase not in ("search", "seeds"):
            return None
        trials = self.study.get_trials(deepcopy=False)
        resuming = {r.watch.number for r in self.running}
        orphan = next((n for n in orphans(trials) if n not in resuming), None)
        if orphan is not None:
            return self.phase, orphan
        live = sum(t.state in (*FINISHED, TrialState.RUNNING) for t in trials)
        if live + self.starting() >= self.target:
            return None
        if self.phase == "seeds":
            self.study = open_seed_study(self.plan, self.storage, best_trial(self.search))  # tops up failed runs
        return self.phase, None

    def starting(self) -> int:
        """Workers started for a new trial that have not yet created it in the storage."""
        return sum(r.watch.number is None for r in self.running)

    def record(self, outcome: TrialOutcome) -> None:
        """What one worker's end means for the job: the evaluation's end ends it, an ERROR fails
        it, and so does a run of failed trials."""
        if self.phase == "evaluate":
            if outcome.state != "EVALUATED":
                log.warning("%s: evaluation failed (%s); the report lacks its test column", self.name, outcome.reason)
            self.phase, self.ending = "ended", ("done", self.note)
        elif outcome.state == "ERROR":
            self.ending = "failed", outcome.reason
        elif outcome.state == "LOST":  # restarted, unless workers keep dying before they begin
            self.lost += 1
            if self.lost >= LOST_LIMIT:
                self.ending = "failed", f"{self.lost} workers in a row died before their trial began ({outcome.reason})"
        elif outcome.state not in ("INTERRUPTED", "SURPLUS"):
            self.lost = 0
            self.failures = self.failures + 1 if outcome.state == "FAIL" else 0
            try:
                check_failures(self.study.study_name, self.failures, self.plan.job.search.max_failures, outcome.reason)
            except HpodError as exc:
                self.ending = "failed", str(exc)

    def progress(self) -> dict:
        """The search's standing, for the queue row that `hpod status` reads."""
        best = best_trial(self.search)
        return {
            "trials_finished": finished_count(self.search),
            "best_value": None if best is None else best.value,
            "best_arch": None if best is None else best.params.get("arch"),
            "baseline_value": self.search.user_attrs.get(BASELINES, {}).get("constant", {}).get("val_loss"),
            "current_trial": None,
            "current_epoch": None,
            "advanced": time.time(),  # a trial ended (schema.DEATH)
        }


def failure(exc: Exception) -> Verdict:
    """A job's end when opening or advancing it raised: the message of an HpodError, else the
    exception's type and message (with the traceback in the log)."""
    if isinstance(exc, HpodError):
        return "failed", str(exc)
    log.exception("job step failed")
    return "failed", f"{type(exc).__name__}: {exc}"
