"""The daemon: a supervisor that works through the queue, running up to `--workers` trials at
once, each in a worker process it starts and watches, so that a trial which is OOM-killed,
crashes or hangs fails alone.

It owns the queue, the scheduler, the signals and the machine readings; each held job
(held_job.py) says which trial a free slot runs next, and a job with no trial to start lets the
next job's trials use the slot. STOP_HPO, `hpod stop`, SIGTERM and SIGINT all stop it
gracefully: the workers finish their step, the jobs are marked interrupted (first in line next
time), the daemon exits 0. A storage that is away is waited out (outage.py)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from apscheduler.schedulers.background import BackgroundScheduler

from hpod.errors import HpodError
from hpod.guard.sensors import Readings, default_readers, read_all
from hpod.state import StateDir, is_damage
from hpod.study.duration import short_duration
from hpod.supervisor.backup import BACKUP_EVERY_S, back_up
from hpod.supervisor.events import announce, job_commands
from hpod.supervisor.handle import TrialOutcome, TrialProcess, WorkerWatch, judge, wait_for_reports
from hpod.supervisor.held_job import DONE, HeldJob, Running, Verdict, failure
from hpod.supervisor.hosts import DEFAULT_GRACE_S
from hpod.supervisor.liveness import host_name, is_dead, process_id
from hpod.supervisor.messages import FINAL, Outcome, Phase, Report, ReportKind, Task
from hpod.supervisor.outage import OUTAGE_LIMIT_S, patient_queue
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import ENDED, Control, JobState, QueuedJob
from hpod.supervisor.slots import Slot, make_slots
from hpod.supervisor.systemd import notify, ping_watchdog
from hpod.supervisor.trials import fail_if_running
from hpod.supervisor.window import Pauses, Window

log = logging.getLogger(__name__)
T = TypeVar("T")
CONTROL_CHECK_S = 2.0


@dataclass(frozen=True)
class DaemonOptions:
    until_idle: bool = False  # exit 0 when no job is left to claim
    lease_s: float = 60.0  # a job's lease; extended every third of it
    idle_poll_s: float = 2.0  # wait between claims when the queue is empty
    hang_s: float = 900.0  # a worker silent this long is killed and its trial failed
    readings_s: float = 10.0
    window: Window | None = None  # outside it, trials pause between steps
    guard: tuple[str, ...] = ()  # KEY=VALUE overrides of the jobs' guard settings
    workers: int = 1  # trials run at once
    devices: Sequence[str] | None = None  # the slots' devices in turn (default: see slots.make_slots)
    host_grace_s: float = DEFAULT_GRACE_S  # another host's trial silent this long is failed
    on_event: str | None = None  # the operator's event command; job files' `on_event` too when allowed:
    allow_job_commands: bool = False
    outage_limit_s: float = OUTAGE_LIMIT_S  # a storage away this long fails the job
    queue_path: Path | None = None  # None: the state directory's (`hpod run` keeps a private one)
    on_report: Callable[[HeldJob, Report], None] | None = None  # `hpod run`'s progress display


class Daemon:
    def __init__(self, state: StateDir, options: DaemonOptions = DaemonOptions()):
        self.state, self.options = state, options
        self.queue_path = state.queue_db if options.queue_path is None else options.queue_path
        self.queue = patient_queue(self.queue_path, options.outage_limit_s)
        self.owner = process_id()
        self.slots = make_slots(options.workers, options.devices)
        self.stop = threading.Event()
        self.abort = threading.Event()  # a second SIGINT: stop the workers at once
        self.pauses = Pauses()  # the daemon's own (the run window): no trial starts or steps
        self.readers = default_readers()
        self.readings: Readings = {}
        self.held: list[HeldJob] = []  # in claim order: the first gets free slots first
        self.held_lock = threading.Lock()
        self.controls: dict[int, Control | None] = {}  # `hpod pause` and `hpod cancel` of held jobs
        self.tended = 0.0  # when the jobs were last settled and the slots filled
        self.changed = True  # a worker started or ended since: settle and fill at once
        self.queue_empty = False  # the last claim found nothing
        self.exit_code = 0  # 1 once it stopped over an error (a damaged database)
        self.window_opens: float | None = None  # when the run window opens, while the daemon waits for it

    @property
    def running(self) -> list[Running]:
        return [r for job in self.held for r in job.running]

    def shown_pause(self) -> tuple[str | None, float | None]:
        """What `hpod status` shows: the daemon's own pause, else a running trial's."""
        if self.pauses.reason is not None:
            return self.pauses.reason, self.pauses.since
        return next((r.trial_pause for r in self.running if r.trial_pause is not None), (None, None))

    def run(self) -> int:
        """Work until stopped (or, with until_idle, until nothing is left); returns the exit code."""
        restore = self.install_signals()
        revived = self.queue.interrupt_dead_owners(is_dead)
        if revived:
            log.info("jobs %s were held by a daemon that died; they resume first", revived)
        self.queue.register_daemon(self.owner, os.getpid(), host_name())
        log.info("daemon %s started on %s with %d worker slot(s)", self.owner, self.state.root, len(self.slots))
        self.check_old_sentinel()
        scheduler = self.start_scheduler()
        self.publish(self.queue)  # `hpod status` shows a window wait at once, not a heartbeat later
        notify("READY=1")
        try:
            while self.cycle():
                pass
        finally:
            notify("STOPPING=1")
            scheduler.shutdown(wait=False)
            self.queue.unregister_daemon(self.owner)
            self.state.stop_file.unlink(missing_ok=True)
            restore()
            log.info("daemon stopped")
        return self.exit_code

    def cycle(self) -> bool:
        """One turn of the loop: watch the workers; then, when a worker started or ended, or
        every CONTROL_CHECK_S (other hosts' trials, `hpod pause`), settle the jobs and fill free
        slots, which query the studies and the queue. False when the daemon is done."""
        running = self.running
        if running:
            self.watch(running)
        started = 0
        if self.changed or (self.stop.is_set() and not running) or time.monotonic() - self.tended >= CONTROL_CHECK_S:
            self.changed, self.tended = False, time.monotonic()
            self.controls = {job.id: self.queue.control(job.id) for job in self.held}
            for job in list(self.held):
                self.settle(job)
            started = self.fill_slots()
        if not self.held and (self.stop.is_set() or (self.queue_empty and self.options.until_idle)):
            if not self.stop.is_set():
                log.info("queue is empty; exiting")
            return False
        if not running and not started:
            ping_watchdog()
            self.stop.wait(self.options.idle_poll_s if not self.held else CONTROL_CHECK_S / 4)
        return True

    def install_signals(self) -> Callable[[], None]:
        """SIGTERM and SIGINT stop it gracefully (a second SIGINT at once); returns what puts the
        process's own handlers back (`hpod run` goes on after the daemon's loop)."""

        def on_signal(signum, frame) -> None:
            if signum == signal.SIGINT and self.stop.is_set():
                self.abort.set()
            log.info("%s: stopping after the current step", signal.Signals(signum).name)
            self.stop.set()

        before = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for signum, handler in before.items():
                signal.signal(signum, handler)

        return restore

    def start_scheduler(self) -> BackgroundScheduler:
        """Periodic work on its own thread and its own queue connection."""
        beat_queue = patient_queue(self.queue_path, self.options.outage_limit_s)
        scheduler = BackgroundScheduler(job_defaults={"misfire_grace_time": 30, "coalesce": True, "max_instances": 1})
        scheduler.add_job(self.check_sentinel, "interval", seconds=1)
        scheduler.add_job(self.sample_readings, "interval", seconds=self.options.readings_s)
        scheduler.add_job(self.heartbeat, "interval", seconds=self.options.lease_s / 3, args=(beat_queue,))
        scheduler.add_job(self.check_window, "interval", seconds=15)
        scheduler.add_job(back_up, "interval", seconds=BACKUP_EVERY_S, args=(self.state,))
        self.sample_readings()
        self.check_window()
        scheduler.start()
        return scheduler

    def check_old_sentinel(self) -> None:
        """A STOP_HPO written before this daemon started (`hpod stop --next`, or a stop whose
        daemon died before removing it) is honoured, and said once in the log and in status."""
        if not self.state.stop_file.exists():
            return
        written = dt.datetime.fromtimestamp(self.state.stop_file.stat().st_mtime)
        note = f"STOP_HPO from {written:%Y-%m-%d %H:%M:%S}, older than this daemon, found at start: stopping "
        note += "without starting a trial (delete the file to let daemons run)"
        log.warning("%s", note)
        self.queue.add_notice(note)
        self.stop.set()

    def check_sentinel(self) -> None:
        if self.state.stop_file.exists() and not self.stop.is_set():
            log.info("%s found: stopping after the current step", self.state.stop_file.name)
            self.stop.set()

    def sample_readings(self) -> None:
        self.readings = read_all(self.readers)

    def check_window(self) -> None:
        """Outside the run window no trial starts or steps; the wait is said once, when it begins."""
        window = self.options.window
        opens = None if window is None else window.next_open(dt.datetime.now())
        waiting = self.window_opens is not None
        self.window_opens = None if opens is None else opens.timestamp()
        self.pauses.set("window", None if opens is None else f"waiting for the run window {window}")
        if (line := window and window.change_line(opens, waiting, short_duration)) is not None:
            log.info("%s", line)

    def heartbeat(self, queue: Queue) -> None:
        """Extend the held jobs' leases and tell `hpod status` this daemon is alive."""
        if not self.extend_leases(queue):
            log.error("lost the lease on a held job; leaving it to its new holder")
            self.stop.set()
        self.publish(queue)

    def publish(self, queue: Queue) -> None:
        """This daemon's heartbeat, pause and readings, for `hpod status`."""
        queue.daemon_heartbeat(self.owner, *self.shown_pause(), json.dumps(self.readings), self.window_opens)

    def extend_leases(self, queue: Queue, jobs: list[HeldJob] | None = None) -> bool:
        """Extend held jobs' leases, counting the time since the last extension into their run
        time; the scheduler's thread and the main thread both call it, hence the lock."""
        ok = True
        with self.held_lock:
            for job in self.held if jobs is None else jobs:
                now = time.monotonic()
                held, job.held_at = now - job.held_at, now
                ok = queue.extend(job.id, self.owner, self.options.lease_s, held) and ok
        return ok

    def fill_slots(self) -> int:
        """Start a worker in each free slot: the held jobs' next trials first, then a newly
        claimed job's. Returns how many started; notes whether the queue had nothing to claim."""
        free = [s for s in self.slots if s not in {r.slot for r in self.running}]
        started, self.queue_empty = 0, False
        while free and not self.stop.is_set() and self.pauses.reason is None:
            picked = next(((job, t) for job in self.held if (t := self.guarded(job, job.next_task)) is not None), None)
            if picked is None:
                self.queue_empty = self.claim() is None
                if self.queue_empty:
                    break
                continue
            self.start_worker(*picked, free.pop(0))
            started, self.changed = started + 1, True
        return started

    def claim(self) -> HeldJob | None:
        """Claim the next job and hold it; a job that cannot even be opened fails at once."""
        while (queued := self.queue.claim(self.owner, self.options.lease_s)) is not None:
            log.info("job %d (%s): claimed, attempt %d", queued.id, queued.study_name, queued.attempts)
            try:
                job = HeldJob(queued, self.state, self.options.outage_limit_s)
            except Exception as exc:
                self.end(queued, failure(exc))
                continue
            with self.held_lock:
                self.held.append(job)
            self.guarded(job, job.open)  # a storage away is waited out; a damaged one stops the daemon
            return job
        return None

    def guarded(self, job: HeldJob, step: Callable[[], T]) -> T | None:
        """Run one step of a job's logic; the daemon never dies of a job, the job fails instead."""
        try:
            return step()
        except Exception as exc:
            if is_damage(exc):  # not the job's fault: it waits, queued, for `hpod doctor --restore`
                self.on_damage(exc)
                job.ending = (JobState.INTERRUPTED, None)
            elif job.meet_error(exc):  # an outage began: it waits, and says so
                self.queue.record_progress(job.id, self.owner, waiting=job.outage.describe())
            return None

    def on_damage(self, exc: Exception) -> None:
        """A damaged database fails no job: the daemon stops, exit status 1, and says why once."""
        if not self.exit_code:
            log.error("stopping: %s", exc if isinstance(exc, HpodError) else f"a database is damaged ({exc})")
        self.exit_code = 1
        self.stop.set()

    def settle(self, job: HeldJob) -> None:
        """Advance the job's phase, fail the trials of silent hosts, release it once it has ended."""
        if job.waiting and time.monotonic() >= job.retry_at and self.guarded(job, job.reach):
            self.queue.record_progress(job.id, self.owner, waiting=None)
        run_s = job.queued.run_s + time.monotonic() - job.started
        self.guarded(job, lambda: job.check(self.stop.is_set(), self.controls.get(job.id), run_s))
        self.guarded(job, lambda: job.fail_silent_hosts(self.options.host_grace_s))
        verdict = job.result()
        if verdict is not None:
            self.record_progress(job)  # other hosts may have finished trials since this one's last
            self.extend_leases(self.queue, [job])
            with self.held_lock:
                self.held.remove(job)
            self.end(job.queued, verdict)

    def end(self, job: QueuedJob, verdict: Verdict) -> None:
        state, note = verdict
        self.queue.release(job.id, self.owner, state, note)
        back_up(self.state)  # a job boundary: what it did is in the backups
        log.info("job %d (%s): %s%s", job.id, job.study_name, state, f" ({note})" if note else "")
        if state in ENDED:
            self.announce(job.id, state, note)

    def announce(self, job_id: int, state: str, reason: str | None) -> None:
        """The event command, with the job as it stands now (its best loss included)."""
        job = self.queue.job(job_id)
        announce(job_commands(job, self.options.on_event, self.options.allow_job_commands), job, state, reason)

    def start_worker(self, job: HeldJob, task: tuple[Phase, int | None], slot: Slot) -> None:
        phase, resume = task
        worker = TrialProcess(
            Task(
                job.queued, str(self.state.root), phase, slot, resume=resume, guard=self.options.guard,
                target=job.target if job.may_race(len(self.slots)) else None,
                outage_limit_s=self.options.outage_limit_s,
            )
        )  # fmt: skip
        job.running.append(Running(job, job.study, phase, slot, worker, WorkerWatch(resume)))

    def watch(self, running: list[Running]) -> None:
        """Read every worker's reports (waiting up to half a second for any), steer each, and
        reap those that exited."""
        wait_for_reports([r.worker for r in running], 0.5)
        for run in running:
            for report in run.worker.reports(timeout=0):
                self.on_report(run, report)
            self.steer(run)
            if not run.worker.alive():
                self.reap(run)

    def steer(self, run: Running) -> None:
        halted = self.stop.is_set() or self.controls.get(run.job.id) is not None or run.job.ending not in (None, DONE)
        run.steer(halted, self.abort.is_set(), self.pauses.reason, self.options.hang_s)

    def on_report(self, run: Running, report: Report) -> None:
        kind, watch, job_id = report.kind, run.watch, run.job.id
        if report.trial is not None:
            watch.number = report.trial
        fields = watch.progress(report)
        if fields is not None:
            self.queue.record_progress(job_id, self.owner, current_trial=watch.number, **fields)
        if kind == ReportKind.EPOCH:
            notify(f"STATUS=job {job_id} {run.job.name}: trial {watch.number} epoch {report.epoch}")
        elif kind in (ReportKind.PAUSED, ReportKind.RESUMED):
            paused = kind == ReportKind.PAUSED
            run.trial_pause = (report.reason, report.since) if paused else None
            if paused:
                self.announce(job_id, JobState.PAUSED, report.reason)
            log.info("trial %s %s", watch.number, f"paused: {report.reason}" if paused else "resumed")
            self.publish(self.queue)
        elif kind in FINAL:
            watch.final = report
        if self.options.on_report is not None:
            self.options.on_report(run.job, report)

    def reap(self, run: Running) -> None:
        """A worker has exited: read what it left, judge its trial, free its slot."""
        code, reports = run.worker.finish()
        for report in reports:
            self.on_report(run, report)
        run.job.running.remove(run)
        self.changed = True
        if run.trial_pause is not None:  # a worker killed while paused never said it resumed
            self.publish(self.queue)
        outcome = judge(run.watch, code, run.worker.peak_rss, self.abort.is_set(), run.worker.oom_kills())
        cancelled = self.controls.get(run.job.id) == Control.CANCEL and not self.stop.is_set()
        if outcome.state == Outcome.INTERRUPTED and cancelled:
            outcome = TrialOutcome(outcome.number, Outcome.FAIL, "cancelled (hpod cancel)")  # it will never resume
        if outcome.state == Outcome.FAIL and outcome.number is not None and run.study is not None:
            self.guarded(run.job, lambda: fail_if_running(run.study, outcome.number, outcome.reason, self.state))
        failed = outcome.state in (Outcome.FAIL, Outcome.LOST)
        if failed or (run.phase == Phase.EVALUATE and outcome.state != Outcome.EVALUATED):
            self.record_failure(run, outcome)
        self.guarded(run.job, lambda: run.job.record(outcome))
        measured = outcome.state not in (Outcome.INTERRUPTED, Outcome.SURPLUS, Outcome.LOST)
        if run.phase in (Phase.SEARCH, Phase.SEEDS) and measured:
            self.record_progress(run.job)

    def record_failure(self, run: Running, outcome: TrialOutcome) -> None:
        """The latest failure and its reason on the job's row, for `hpod status`."""
        text = outcome.describe(run.phase)
        self.guarded(run.job, lambda: self.queue.record_progress(run.job.id, self.owner, last_failure=text))

    def record_progress(self, job: HeldJob) -> None:
        if job.search is not None:  # else never opened: its storage was away from the claim on
            self.guarded(job, lambda: self.queue.record_progress(job.id, self.owner, **job.progress()))
