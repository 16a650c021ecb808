"""The daemon: a supervisor that works through the queue, one trial process at a time.

It owns the queue, the scheduler, the signals and the machine readings; each trial trains in a
worker process it starts and watches, so that a trial which is OOM-killed, crashes or hangs
fails alone. STOP_HPO, `hpod stop`, SIGTERM and SIGINT all stop it gracefully: the worker
finishes its step, the job is marked interrupted (first in line next time), the daemon exits 0.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

import optuna
from apscheduler.schedulers.background import BackgroundScheduler

from hpod.errors import HpodError
from hpod.guard.sensors import Readings, default_readers, read_all
from hpod.records import BASELINES
from hpod.state import StateDir, open_storage
from hpod.study.plan import StudyPlan, best_trial, finished_count, open_study
from hpod.study.seeds import open_seed_study
from hpod.supervisor.handle import TrialOutcome, TrialProcess, WorkerWatch, describe_exit
from hpod.supervisor.job_row import check_crashes, plan_from_row
from hpod.supervisor.liveness import is_dead, process_id
from hpod.supervisor.queue import Queue
from hpod.supervisor.systemd import notify, watchdog_interval_s
from hpod.supervisor.trials import check_failures, fail_trial, orphaned_trials, wait_for_old_workers
from hpod.supervisor.window import Window

log = logging.getLogger(__name__)
STOP_EXTEND_USEC = 5 * 60 * 1_000_000  # ask systemd for time to finish a step and checkpoint
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


class Daemon:
    def __init__(self, state: StateDir, options: DaemonOptions = DaemonOptions()):
        self.state, self.options = state, options
        self.queue = Queue(state.queue_db)
        self.owner = process_id()
        self.stop = threading.Event()
        self.abort = threading.Event()  # a second SIGINT: stop the worker at once
        self.pause_reasons: dict[str, str] = {}  # the daemon's own: no trial starts or steps
        self.paused_since: float | None = None
        self.trial_pause: tuple[str, float] | None = None  # the worker's guard: (reason, since)
        self.readers = default_readers()
        self.readings: Readings = {}
        self.job: dict | None = None
        self.held_at = time.monotonic()
        self.held_lock = threading.Lock()

    @property
    def pause_reason(self) -> str | None:
        return "; ".join(self.pause_reasons.values()) or None

    def set_pause(self, name: str, reason: str | None) -> None:
        if reason is None:
            self.pause_reasons.pop(name, None)
        else:
            self.pause_reasons[name] = reason
        if not self.pause_reasons:
            self.paused_since = None
        elif self.paused_since is None:
            self.paused_since = time.time()

    def shown_pause(self) -> tuple[str | None, float | None]:
        """What `hpod status` shows: the daemon's own pause, else the running trial's."""
        if self.pause_reason is not None:
            return self.pause_reason, self.paused_since
        return self.trial_pause or (None, None)

    def run(self) -> int:
        """Work until stopped (or, with until_idle, until nothing is left); returns the exit code."""
        self.install_signals()
        revived = self.queue.interrupt_dead_owners(is_dead)
        if revived:
            log.info("jobs %s were held by a daemon that died; they resume first", revived)
        self.queue.register_daemon(self.owner, os.getpid(), socket.gethostname())
        scheduler = self.start_scheduler()
        notify("READY=1")
        log.info("daemon %s started on %s", self.owner, self.state.root)
        try:
            while not self.stop.is_set():
                row = None if self.pause_reason else self.queue.claim(self.owner, self.options.lease_s)
                if row is not None:
                    self.work_on(row)
                elif self.options.until_idle and not self.pause_reason:
                    log.info("queue is empty; exiting")
                    break
                else:
                    self.ping_watchdog()
                    self.stop.wait(self.options.idle_poll_s)
        finally:
            notify("STOPPING=1")
            scheduler.shutdown(wait=False)
            self.queue.unregister_daemon(self.owner)
            self.state.stop_file.unlink(missing_ok=True)
            log.info("daemon stopped")
        return 0

    def install_signals(self) -> None:
        def on_signal(signum, frame) -> None:
            if signum == signal.SIGINT and self.stop.is_set():
                self.abort.set()
            log.info("%s: stopping after the current step", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def start_scheduler(self) -> BackgroundScheduler:
        """Periodic work on its own thread and its own queue connection."""
        beat_queue = Queue(self.state.queue_db)
        scheduler = BackgroundScheduler(job_defaults={"misfire_grace_time": 30, "coalesce": True, "max_instances": 1})
        scheduler.add_job(self.check_sentinel, "interval", seconds=1)
        scheduler.add_job(self.sample_readings, "interval", seconds=self.options.readings_s)
        scheduler.add_job(self.heartbeat, "interval", seconds=self.options.lease_s / 3, args=(beat_queue,))
        scheduler.add_job(self.check_window, "interval", seconds=15)
        self.sample_readings()
        self.check_window()
        scheduler.start()
        return scheduler

    def check_sentinel(self) -> None:
        if self.state.stop_file.exists() and not self.stop.is_set():
            log.info("%s found: stopping after the current step", self.state.stop_file.name)
            self.stop.set()

    def sample_readings(self) -> None:
        self.readings = read_all(self.readers)

    def check_window(self) -> None:
        window = self.options.window
        inside = window is None or window.contains(dt.datetime.now())
        self.set_pause("window", None if inside else f"outside the run window {window}")

    def heartbeat(self, queue: Queue) -> None:
        """Extend the current job's lease and tell `hpod status` this daemon is alive."""
        if not self.extend_lease(queue):
            log.error("lost the lease on the current job; leaving it to its new holder")
            self.stop.set()
        self.publish(queue)

    def publish(self, queue: Queue) -> None:
        """This daemon's heartbeat, pause and readings, for `hpod status`."""
        queue.daemon_heartbeat(self.owner, *self.shown_pause(), json.dumps(self.readings))

    def extend_lease(self, queue: Queue) -> bool:
        """Extend the held job's lease, counting the time since the last extension into its run
        time; the scheduler's thread and the main thread both call it, hence the lock."""
        with self.held_lock:
            if self.job is None:
                return True
            now = time.monotonic()
            held, self.held_at = now - self.held_at, now
            return queue.extend(self.job["id"], self.owner, self.options.lease_s, held)

    def ping_watchdog(self) -> None:
        if watchdog_interval_s() is not None:
            notify("WATCHDOG=1")

    def work_on(self, row: dict) -> None:
        """Run one claimed job until it ends or is stopped; the daemon never dies of a job."""
        with self.held_lock:
            self.job, self.held_at = row, time.monotonic()
        log.info("job %d (%s): claimed, attempt %d", row["id"], row["study_name"], row["attempts"])
        try:
            check_crashes(row)
            state, note = self.run_job(row)
        except HpodError as exc:
            state, note = "failed", str(exc)
        except Exception as exc:
            log.exception("job %d failed", row["id"])
            state, note = "failed", f"{type(exc).__name__}: {exc}"
        self.extend_lease(self.queue)
        self.queue.release(row["id"], self.owner, state, note)
        with self.held_lock:
            self.job = None
        log.info("job %d (%s): %s%s", row["id"], row["study_name"], state, f" ({note})" if note else "")

    def run_job(self, row: dict) -> tuple[str, str | None]:
        """The search to its target, then the seed runs of its best, then, in a worker too, the
        evaluation on val and test that the report rests on."""
        plan = plan_from_row(row)
        storage = open_storage(self.state.storage_url(row["storage"]))
        study = open_study(plan, storage)
        started = time.monotonic()
        verdict = self.run_phase(row, plan, study, "search", row["n_trials"], started)
        best = best_trial(study)
        if verdict == ("done", None) and plan.job.search.final_seeds and best is not None:
            seeds = open_seed_study(plan, storage, best)
            verdict = self.run_phase(row, plan, seeds, "seeds", plan.job.search.final_seeds, started)
        if verdict[0] == "done":
            outcome = self.supervise(row, study, None, "evaluate")
            if outcome.state != "EVALUATED":
                log.warning("%s: evaluation failed (%s); the report lacks its test column", plan.name, outcome.reason)
        return verdict

    def run_phase(self, row: dict, plan: StudyPlan, study: optuna.Study, phase: str, target: int, started: float):
        """Trials of `study` in workers until it has `target` finished or the job ends; returns
        the job's verdict."""
        wait_for_old_workers(study)
        failures = 0
        while True:
            verdict = self.verdict(row, study, target, time.monotonic() - started)
            if verdict is not None:
                return verdict
            if self.pause_reason:
                self.ping_watchdog()
                self.stop.wait(CONTROL_CHECK_S)
                continue
            resume = next(iter(orphaned_trials(study)), None)
            outcome = self.supervise(row, study, resume, phase)
            if outcome.state == "ERROR":
                return "failed", outcome.reason
            if outcome.state == "INTERRUPTED":
                continue
            if phase == "search":
                self.record_progress(row, study)
            failures = failures + 1 if outcome.state == "FAIL" else 0
            check_failures(study.study_name, failures, plan.job.search.max_failures, outcome.reason)

    def verdict(self, row: dict, study: optuna.Study, target: int, held_s: float) -> tuple[str, str | None] | None:
        """Whether the job ends now, and how; None to run another trial."""
        if self.stop.is_set():
            return "interrupted", None
        control = self.queue.control(row["id"])
        if control is not None:
            return {"pause": "paused", "cancel": "cancelled"}[control], None
        finished = finished_count(study)
        if finished >= target:
            return "done", None
        timeout = row["timeout_s"]
        if timeout is not None and row["run_s"] + held_s >= timeout:
            return "done", f"timed out after {timeout / 3600:g} h with {finished}/{target} trials of {study.study_name}"
        return None

    def supervise(self, row: dict, study: optuna.Study, resume: int | None, phase: str = "search") -> TrialOutcome:
        """Start a worker for one trial of the phase (or to resume one) and watch it until it exits."""
        task = {
            "job": row,
            "state_root": str(self.state.root),
            "resume": resume,
            "guard": self.options.guard,
            "phase": phase,
        }
        worker = TrialProcess(task)
        watch = WorkerWatch(resume)
        last_control = 0.0
        while worker.alive():
            for report in worker.reports(timeout=0.5):
                self.on_report(row, watch, report)
            if time.monotonic() - last_control >= CONTROL_CHECK_S:
                last_control = time.monotonic()
                watch.control = self.queue.control(row["id"])
            self.steer(worker, watch)
        code, reports = worker.finish()
        for report in reports:
            self.on_report(row, watch, report)
        if self.trial_pause is not None:  # a worker killed while paused never said it resumed
            self.trial_pause = None
            self.publish(self.queue)
        return self.outcome(study, watch, code, worker.peak_rss)

    def steer(self, worker: TrialProcess, watch: WorkerWatch) -> None:
        """Pass stops and pauses to the worker; kill it when it hangs or on a second SIGINT."""
        if self.abort.is_set():
            watch.killed = "stopped at once by a second SIGINT"
            worker.kill()
        elif (self.stop.is_set() or watch.control is not None) and not watch.stop_sent:
            worker.send("stop")
            watch.stop_sent = True
            notify(f"EXTEND_TIMEOUT_USEC={STOP_EXTEND_USEC}")
        paused = self.pause_reason is not None
        if paused != watch.paused:
            worker.send("pause" if paused else "resume")
            watch.paused = paused
            log.info("trial %s %s", watch.number, f"paused: {self.pause_reason}" if paused else "resumed")
        silent_s = time.monotonic() - worker.last_report
        if not paused and silent_s > self.options.hang_s and watch.killed is None:
            watch.killed = f"no progress for {silent_s:.0f} s (hang limit {self.options.hang_s:g} s); killed"
            worker.kill()
        elif paused or silent_s < self.options.hang_s:
            self.ping_watchdog()

    def on_report(self, row: dict, watch: WorkerWatch, report: dict) -> None:
        kind = report["kind"]
        if "trial" in report and report["trial"] is not None:
            watch.number = report["trial"]
        if kind == "epoch":
            self.queue.record_progress(row["id"], self.owner, current_trial=watch.number, current_epoch=report["epoch"])
            notify(f"STATUS=job {row['id']} {row['study_name']}: trial {watch.number} epoch {report['epoch']}")
        elif kind == "started":
            self.queue.record_progress(row["id"], self.owner, current_trial=watch.number, current_epoch=None)
        elif kind in ("paused", "resumed"):
            self.trial_pause = (report["reason"], report["since"]) if kind == "paused" else None
            log.info("trial %s %s", watch.number, f"paused: {report['reason']}" if kind == "paused" else "resumed")
            self.publish(self.queue)
        elif kind in ("finished", "interrupted", "error"):
            watch.final = report

    def outcome(self, study: optuna.Study, watch: WorkerWatch, code: int, peak_rss: int) -> TrialOutcome:
        final = watch.final or {}
        if final.get("kind") == "finished":
            return TrialOutcome(watch.number, final["state"])
        if final.get("kind") == "interrupted" or (self.abort.is_set() and watch.killed):
            return TrialOutcome(watch.number, "INTERRUPTED")
        if final.get("kind") == "error":
            return TrialOutcome(None, "ERROR", final["message"])
        reason = watch.killed or describe_exit(code, peak_rss)
        log.warning("trial %s: %s", watch.number, reason)
        if watch.number is not None:
            state = study.get_trials(deepcopy=False)[watch.number].state
            if state == optuna.trial.TrialState.RUNNING:
                fail_trial(study, watch.number, reason, self.state)
        return TrialOutcome(watch.number, "FAIL", reason)

    def record_progress(self, row: dict, study: optuna.Study) -> None:
        best = best_trial(study)
        self.queue.record_progress(
            row["id"],
            self.owner,
            trials_finished=finished_count(study),
            best_value=None if best is None else best.value,
            best_arch=None if best is None else best.params.get("arch"),
            baseline_value=study.user_attrs.get(BASELINES, {}).get("constant", {}).get("val_loss"),
            current_trial=None,
            current_epoch=None,
        )
