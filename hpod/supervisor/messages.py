"""What the daemon and a worker say to each other, as typed values with one encoder and decoder:
the task the daemon writes as the worker's first stdin line, the commands after it, and the
reports the worker writes back, one JSON line each. worker.py, handle.py and the daemon share
them, so a field is named in one place."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import StrEnum

from hpod.supervisor.rows import QueuedJob
from hpod.supervisor.slots import Slot


class Phase(StrEnum):
    """A held job's way: search → seeds (of its best) → evaluate → ended."""

    SEARCH = "search"
    SEEDS = "seeds"
    EVALUATE = "evaluate"
    ENDED = "ended"


class Outcome(StrEnum):
    """What a worker's end means for its trial."""

    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    SURPLUS = "SURPLUS"  # the study reached its target before this trial finished
    INTERRUPTED = "INTERRUPTED"  # stopped between steps; resumed later
    EVALUATED = "EVALUATED"  # the evaluation, which runs no trial, ended
    LOST = "LOST"  # the worker died before its trial began
    ERROR = "ERROR"  # the job itself is bad (its data, its file): the job fails


class Command(StrEnum):
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"


class ReportKind(StrEnum):
    STARTED = "started"  # its trial exists in the storage
    SETUP = "setup"  # the trial's planned epochs and steps per epoch
    STEP = "step"  # every second or so; step -1 is a keep-alive before the first step
    EPOCH = "epoch"
    PAUSED = "paused"  # by its guard or an unreachable storage (the hang limit does not count it)
    RESUMED = "resumed"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    ERROR = "error"  # an HpodError: the job is bad
    CRASHED = "crashed"  # an exception outside a trial; its traceback is written


FINAL = (ReportKind.FINISHED, ReportKind.INTERRUPTED, ReportKind.ERROR, ReportKind.CRASHED)


@dataclass(frozen=True)
class Report:
    kind: ReportKind
    trial: int | None = None
    epoch: int | None = None
    step: int | None = None
    steps: int | None = None  # setup: optimizer steps per epoch
    epochs: int | None = None  # setup: planned epochs
    val_loss: float | None = None
    outcome: Outcome | None = None  # finished
    reason: str | None = None  # paused, finished (a failure's), error, crashed
    since: float | None = None  # paused: when

    def encode(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def decode(cls, line: str | bytes) -> Report:
        values = json.loads(line)
        values["kind"] = ReportKind(values["kind"])
        if "outcome" in values:
            values["outcome"] = Outcome(values["outcome"])
        return cls(**values)


@dataclass(frozen=True)
class Task:
    """One worker's work: a trial of the job's phase (to resume, or a new one), or its evaluation."""

    job: QueuedJob
    state_root: str
    phase: Phase
    slot: Slot
    resume: int | None = None
    target: int | None = None  # set where other workers race it: a trial past it is surplus
    guard: tuple[str, ...] = ()  # the daemon's KEY=VALUE overrides of the job's guard
    outage_limit_s: float | None = None

    def encode(self) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps(values | {"job": self.job.to_row(), "slot": asdict(self.slot)})

    @classmethod
    def decode(cls, line: str) -> Task:
        values = json.loads(line)
        values.update(
            job=QueuedJob.from_row(values["job"]),
            phase=Phase(values["phase"]),
            slot=Slot(**values["slot"]),
            guard=tuple(values["guard"]),
        )
        return cls(**values)
