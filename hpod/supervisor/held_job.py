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
from hpod.state import StateDir
from hpod.storage import StorageUnreachable, is_unreachable, open_storage
from hpod.study.plan import FINISHED, best_trial, finished_count, open_study
from hpod.study.seeds import open_seed_study
from hpod.supervisor.handle import TrialOutcome, TrialProcess, WorkerWatch
from hpod.supervisor.hosts import fail_silent_trials
from hpod.supervisor.messages import Command, Outcome, Phase
from hpod.supervisor.outage import OUTAGE_LIMIT_S, Outage
from hpod.supervisor.rows import Control, JobState, QueuedJob
from hpod.supervisor.slots import Slot
from hpod.supervisor.systemd import notify, ping_watchdog
from hpod.supervisor.trials import check_failures, drop_failed_checkpoints, orphans, wait_for_old_workers

log = logging.getLogger(__name__)
Verdict = tuple[JobState, str | None]  # the job's end state and its note
DONE: Verdict = (JobState.DONE, None)
SILENCE_CHECK_S = 15.0  # how often a held study is searched for trials of silent hosts
LOST_LIMIT = 10  # workers in a row dying before their trial began (killed at start-up) fail the job
STARTUP_LIMIT_S = 1800.0  # silence allowed before a worker trains (imports, data, memory probe)
STOP_EXTEND_USEC = 5 * 60 * 1_000_000  # ask systemd for time to finish a step and checkpoint


@dataclass
class Running:
    """One worker in flight: the job and study it serves, its slot, what the daemon knows of it."""

    job: HeldJob
    study: optuna.Study | None  # None for the evaluation, which runs no trial
    phase: Phase
    slot: Slot
    worker: TrialProcess
    watch: WorkerWatch
    trial_pause: tuple[str, float] | None = None  # the worker's guard: (reason, since)

    def steer(self, halted: bool, abort: bool, pause: str | None, hang_s: float) -> None:
        """Pass a stop and the daemon's pause to the worker; kill it when it hangs (silent past
        the hang limit while not paused) or on a second SIGINT."""
        worker, watch = self.worker, self.watch
        if abort and watch.killed is None:
            watch.killed = "stopped at once by a second SIGINT"
            worker.kill()
        elif halted and not watch.stop_sent:
            worker.send(Command.STOP)
            watch.stop_sent = True
            notify(f"EXTEND_TIMEOUT_USEC={STOP_EXTEND_USEC}")
        paused = pause is not None
        if paused != watch.paused:
            worker.send(Command.PAUSE if paused else Command.RESUME)
            watch.paused = paused
            log.info("trial %s %s", watch.number, f"paused: {pause}" if paused else "resumed")
        silent_s = time.monotonic() - worker.last_report
        limit = hang_s if watch.training else max(hang_s, STARTUP_LIMIT_S)
        paused = paused or self.trial_pause is not None  # it waits for its guard or storage, and said so
        if not paused and silent_s > limit and watch.killed is None:
            watch.killed = f"no progress for {silent_s:.0f} s (hang limit {limit:g} s); killed"
            worker.kill()
        elif paused or silent_s < limit:
            ping_watchdog()


@dataclass
class HeldJob:
    """The job as claimed (`queued`, which holds its target), and where it stands in this hold."""

    queued: QueuedJob
    state: StateDir
    outage_limit_s: float = OUTAGE_LIMIT_S
    phase: Phase = Phase.SEARCH
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
        check_crashes(self.queued)
        self.plan = self.queued.plan
        self.outage = Outage.of_storage(self.state.storage_url(self.queued.storage), self.outage_limit_s)
        self.storage, self.search, self.study = None, None, None

    def open(self) -> None:
        """Open its storage and study; the daemon tries again, later, while the storage is away."""
        self.state.refuse_links(self.name)
        self.storage = open_storage(self.state.storage_url(self.queued.storage))
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
            self.ending = JobState.FAILED, str(gone)
            return False
        return began

    @property
    def waiting(self) -> bool:
        """Its storage is away: none of its trials starts until the next try answers."""
        return self.outage.since is not None

    @property
    def id(self) -> int:
        return self.queued.id

    @property
    def name(self) -> str:
        return self.queued.study_name

    @property
    def target(self) -> int:
        """The trials this phase runs: the job's target in the search, its seed runs after."""
        return self.plan.job.search.final_seeds if self.phase == Phase.SEEDS else self.queued.target

    def result(self) -> Verdict | None:
        """The job's end state once it has ended and no worker of it is left; else None."""
        if self.running or self.ending is None:
            return None
        return self.ending if self.ending[0] != JobState.DONE or self.phase == Phase.ENDED else None

    def check(self, stopping: bool, control: Control | None, run_s: float) -> None:
        """Decide whether this phase may start more trials; move to the next phase once its last
        worker is done. A stop or a pause ends the job between phases too; a failure stands."""
        if self.phase == Phase.ENDED:
            return
        halted = self.halted(stopping, control)
        if halted is not None and (self.ending is None or self.ending[0] == JobState.DONE):
            self.ending = halted
        if self.waiting or self.search is None:
            return
        if self.ending is None and self.phase in (Phase.SEARCH, Phase.SEEDS):
            self.ending = self.reached(run_s)
        if self.ending is not None and self.ending[0] == JobState.DONE and not self.running:
            self.advance()

    def halted(self, stopping: bool, control: Control | None) -> Verdict | None:
        if stopping:
            return JobState.INTERRUPTED, None
        if control is not None:
            return control.state, None
        return None

    def reached(self, run_s: float) -> Verdict | None:
        """Whether the phase's target (counting every host's finished trials) or the job's
        timeout is reached."""
        finished = finished_count(self.study)
        if finished >= self.target:
            return DONE
        timeout = self.queued.timeout_s
        if timeout is not None and run_s >= timeout:
            note = f"timed out after {timeout / 3600:g} h with {finished}/{self.target} trials of {self.name}"
            return JobState.DONE, note
        return None

    def advance(self) -> None:
        """search → seeds (when the job asks for them) → evaluate; the evaluation's end ends the job."""
        best = best_trial(self.search)
        if self.phase == Phase.SEARCH and self.plan.job.search.final_seeds and best is not None and self.ending == DONE:
            self.study = open_seed_study(self.plan, self.storage, best)
            self.phase, self.failures, self.ending = Phase.SEEDS, 0, None
        elif self.phase in (Phase.SEARCH, Phase.SEEDS):
            self.phase, self.note, self.ending = Phase.EVALUATE, self.ending[1], None

    def may_race(self, workers: int) -> bool:
        """Whether another worker or host may start a trial of this study at the same time, so a
        new trial must check that it is not surplus (a query per trial, spared otherwise)."""
        return workers > 1 or self.queued.storage is not None

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

    def next_task(self) -> tuple[Phase, int | None] | None:
        """(phase, trial to resume or None for a new one) for a free slot, or None when this job
        has nothing to start now: its trials to the target are all running, or it is ending."""
        if self.ending is not None or self.waiting:
            return None
        if self.phase == Phase.EVALUATE:
            return None if self.running else (Phase.EVALUATE, None)
        if self.phase not in (Phase.SEARCH, Phase.SEEDS):
            return None
        trials = self.study.get_trials(deepcopy=False)
        resuming = {r.watch.number for r in self.running}
        orphan = next((n for n in orphans(trials) if n not in resuming), None)
        if orphan is not None:
            return self.phase, orphan
        live = sum(t.state in (*FINISHED, TrialState.RUNNING) for t in trials)
        if live + self.starting() >= self.target:
            return None
        if self.phase == Phase.SEEDS:
            self.study = open_seed_study(self.plan, self.storage, best_trial(self.search))  # tops up failed runs
        return self.phase, None

    def starting(self) -> int:
        """Workers started for a new trial that have not yet created it in the storage."""
        return sum(r.watch.number is None for r in self.running)

    def record(self, outcome: TrialOutcome) -> None:
        """What one worker's end means for the job: the evaluation's end ends it, an ERROR fails
        it, and so does a run of failed trials."""
        if self.phase == Phase.EVALUATE:
            if outcome.state != Outcome.EVALUATED:
                log.warning("%s: evaluation failed (%s); the report lacks its test column", self.name, outcome.reason)
            self.phase, self.ending = Phase.ENDED, (JobState.DONE, self.note)
        elif outcome.state == Outcome.ERROR:
            self.ending = JobState.FAILED, outcome.reason
        elif outcome.state == Outcome.LOST:  # restarted, unless workers keep dying before they begin
            self.lost += 1
            if self.lost >= LOST_LIMIT:
                why = f"{self.lost} workers in a row died before their trial began ({outcome.reason})"
                self.ending = JobState.FAILED, why
        elif outcome.state not in (Outcome.INTERRUPTED, Outcome.SURPLUS):
            self.lost = 0
            self.failures = self.failures + 1 if outcome.state == Outcome.FAIL else 0
            try:
                check_failures(self.study.study_name, self.failures, self.plan.job.search.max_failures, outcome.reason)
            except HpodError as exc:
                self.ending = JobState.FAILED, str(exc)

    def progress(self) -> dict:
        """The search's standing and its seed runs', for the queue row that `hpod status` reads."""
        best = best_trial(self.search)
        return {
            "trials_finished": finished_count(self.search),
            "best_value": None if best is None else best.value,
            "best_arch": None if best is None else best.params.get("arch"),
            "baseline_value": self.search.user_attrs.get(BASELINES, {}).get("constant", {}).get("val_loss"),
            "seeds_finished": finished_count(self.study) if self.phase == Phase.SEEDS else 0,
            "current_trial": None,
            "current_epoch": None,
            "advanced": time.time(),  # a trial ended (schema.DEATH)
        }


def failure(exc: Exception) -> Verdict:
    """A job's end when opening or advancing it raised: the message of an HpodError, else the
    exception's type and message (with the traceback in the log)."""
    if isinstance(exc, HpodError):
        return JobState.FAILED, str(exc)
    log.exception("job step failed")
    return JobState.FAILED, f"{type(exc).__name__}: {exc}"


def check_crashes(job: QueuedJob) -> None:
    """A job whose daemon died holding it `search.max_crashes` times fails, rather than bring a
    restarted daemon (systemd's Restart=) back into the same crash forever."""
    limit = job.spec.search.max_crashes
    if job.crashes >= limit:
        raise HpodError(
            f"the daemon holding job {job.id} died {job.crashes} times (search.max_crashes is {limit}); "
            "failed so that restarts do not loop; re-enqueue it with --force to try again"
        )
