"""The daemon's handle on one trial's worker process (the child is `worker.py`): start it, send
it commands, read its reports, sample its memory, watch it exit."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil

from hpod.guard.sensors import oom_kills
from hpod.supervisor.messages import Command, Outcome, Phase, Report, ReportKind, Task

log = logging.getLogger(__name__)
EXITING_POLL_S = 0.05  # how often a worker that closed its report pipe is checked for its exit
STEP_RECORD_S = 5.0  # how often a running trial's step progress goes to the queue


@dataclass
class TrialOutcome:
    number: int | None
    state: Outcome
    reason: str | None = None

    def describe(self, phase: Phase) -> str:
        """The failure as `hpod status` shows it: which trial or worker, when, and why."""
        what = f"{phase} trial {self.number}" if self.number is not None else f"a {phase} worker"
        what += " (before its trial began)" if self.state == Outcome.LOST else ""
        what = "the evaluation" if phase == Phase.EVALUATE else what
        return f"{what} failed at {dt.datetime.now():%H:%M}: {self.reason}"


@dataclass
class WorkerWatch:
    """What the daemon knows of a running worker."""

    number: int | None
    stop_sent: bool = False
    paused: bool = False
    killed: str | None = None
    final: Report | None = None
    epoch_steps: int | None = None  # the trial's optimizer steps per epoch, from its setup report
    first_step: tuple[float, int] | None = None  # (when, global step) of the first step report
    written: float = 0.0  # when the step progress last went to the queue
    training: bool = False  # it has reported its set-up or a step: the hang limit applies from here

    def progress(self, report: Report) -> dict | None:
        """The queue fields a report updates for `hpod status` (step progress every few seconds,
        for the ETA it gives before any trial has finished); None when it updates none."""
        kind, stepped = report.kind, report.kind == ReportKind.STEP and report.step >= 0
        self.training = self.training or kind in (ReportKind.SETUP, ReportKind.EPOCH) or stepped
        if kind == ReportKind.EPOCH:  # an epoch ended: evidence that this hold made progress (schema.DEATH)
            return {"current_epoch": report.epoch, "advanced": time.time()}
        if kind == ReportKind.STARTED:
            return {"current_epoch": None, "current_step": None, "step_s": None}
        if kind == ReportKind.SETUP:
            self.epoch_steps = report.steps
            return {"trial_epochs": report.epochs, "epoch_steps": report.steps, "step_s": None}
        if not stepped:  # step -1: a keep-alive before the first step
            return None
        step_s = self.step_seconds(report.epoch, report.step)
        if time.monotonic() - self.written < STEP_RECORD_S:
            return None
        self.written = time.monotonic()
        return {"current_epoch": report.epoch, "current_step": report.step, "step_s": step_s}

    def step_seconds(self, epoch: int, step: int) -> float | None:
        """Seconds per optimizer step measured since this worker's first step report (a resumed
        trial starts mid-epoch, hence global steps)."""
        if self.epoch_steps is None:
            return None
        now, done = time.monotonic(), epoch * self.epoch_steps + step
        if self.first_step is None or done < self.first_step[1]:
            self.first_step = (now, done)
            return None
        since, start = self.first_step
        return (now - since) / (done - start) if done > start else None


def wait_for_reports(workers: list[TrialProcess], timeout: float) -> list[int]:
    """Wait up to `timeout` seconds for a report from any worker; the report pipes ready. A
    worker that closed its end (its interpreter is shutting down) is left out of the wait, which
    would return at once, tens of thousands of times a second, until it exits; the wait is then
    at most EXITING_POLL_S, so that its exit is seen soon."""
    open_fds = [w.reports_fd for w in workers if not w.closed]
    wait = timeout if len(open_fds) == len(workers) else min(timeout, EXITING_POLL_S)
    return select.select(open_fds, [], [], wait)[0]


class TrialProcess:
    """The daemon's handle on one worker: start it, talk to it, watch it."""

    def __init__(self, task: Task):
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpod.supervisor.worker", str(write_fd)],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            text=True,
        )
        os.close(write_fd)
        self.reports_fd, self.buffer = read_fd, b""
        self.closed = False  # the worker closed its end (it is exiting): its fd is always readable now
        self.process = psutil.Process(self.proc.pid)
        self.peak_rss = 0
        self.last_report = time.monotonic()
        self.oom_kills_before = oom_kills()
        self.write(task.encode())

    def oom_kills(self) -> int | None:
        """OOM kills the kernel counted since this worker started (any process's: a hint)."""
        now = oom_kills()
        return None if now is None or self.oom_kills_before is None else now - self.oom_kills_before

    def send(self, command: Command) -> None:
        self.write(command)

    def write(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the worker is gone; its exit status tells why

    def reports(self, timeout: float) -> list[Report]:
        """Reports that arrive within `timeout` seconds; also samples the worker's RSS."""
        self.sample_rss()
        if wait_for_reports([self], timeout):
            chunk = os.read(self.reports_fd, 1 << 16)
            self.closed = not chunk
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        if lines:
            self.last_report = time.monotonic()
        return [Report.decode(line) for line in lines if line.strip()]

    def sample_rss(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()

    def finish(self) -> tuple[int, list[Report]]:
        """Wait for the worker to exit; its exit code and the reports it left in the pipe."""
        code = self.proc.wait()
        while chunk := os.read(self.reports_fd, 1 << 16):
            self.buffer += chunk
        reports = [Report.decode(line) for line in self.buffer.split(b"\n") if line.strip()]
        self.buffer = b""
        os.close(self.reports_fd)
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        return code, reports


def describe_exit(code: int, peak_rss: int, oom_kills: int | None = None) -> str:
    """Why a worker died, in the kernel's words: a SIGKILL is called the OOM killer's only when
    the kernel counted an OOM kill while the worker ran (a kill by hand is not)."""
    rss = f"peak RSS {peak_rss / 2**30:.2f} GiB"
    if code < 0:
        name = signal.Signals(-code).name
        oom = name == "SIGKILL" and oom_kills is not None and oom_kills > 0
        why = f": the kernel's OOM killer ended {oom_kills} process(es) meanwhile (/proc/vmstat)" if oom else ""
        return f"worker killed by signal {-code} ({name}){why}, {rss}"
    return f"worker exited with code {code}, {rss}"


def judge(watch: WorkerWatch, code: int, peak_rss: int, aborted: bool, oom_kills: int | None = None) -> TrialOutcome:
    """What a worker's end means for its trial: what it reported last, else why it died."""
    final = None if watch.final is None else watch.final.kind
    if final == ReportKind.FINISHED:
        return TrialOutcome(watch.number, watch.final.outcome, watch.final.reason)
    if final == ReportKind.INTERRUPTED or (aborted and watch.killed):
        return TrialOutcome(watch.number, Outcome.INTERRUPTED)
    if final == ReportKind.ERROR:
        return TrialOutcome(None, Outcome.ERROR, watch.final.reason)
    if final == ReportKind.CRASHED:  # an exception outside a trial; the worker wrote its traceback
        log.warning("trial %s: %s", watch.number, watch.final.reason)
        return TrialOutcome(watch.number, Outcome.FAIL, watch.final.reason)
    reason = watch.killed or describe_exit(code, peak_rss, oom_kills)
    log.warning("trial %s: %s", watch.number, reason)
    if watch.number is None:  # it died before its trial began: no trial failed, the slot starts another
        return TrialOutcome(None, Outcome.LOST, reason)
    return TrialOutcome(watch.number, Outcome.FAIL, reason)
