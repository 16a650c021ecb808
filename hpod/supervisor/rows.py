"""The queue's rows as typed values: a job as one frozen `QueuedJob`, built once from its row
(its job file parsed once, its estimate decoded once), a daemon's entry, and the states they
take. Only this module and queue.py know the columns by name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from hpod.job import JobSpec, parse_job
from hpod.study.duration import Estimate

if TYPE_CHECKING:
    from hpod.study.plan import StudyPlan


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    INTERRUPTED = "interrupted"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.PAUSED, JobState.INTERRUPTED)  # a duplicate is refused


class Control(StrEnum):
    """What a person asked of a running job, acted on between steps by the daemon holding it."""

    PAUSE = "pause"
    CANCEL = "cancel"

    @property
    def state(self) -> JobState:
        return JobState.PAUSED if self is Control.PAUSE else JobState.CANCELLED


@dataclass(frozen=True)
class QueuedJob:
    """One job of the queue as it stands when read. Its target (`n_trials`) is stored here once:
    the daemon's phases, the worker's surplus check and the study's recorded target follow it."""

    id: int
    study_name: str
    budget: int
    horizon: int
    job_name: str
    job_text: str  # the job file as it was at enqueue time
    data_path: str | None  # None: the bundled data
    data_sha256: str
    storage: str | None  # None: SQLite in the state directory
    n_trials: int
    max_epochs: int | None
    priority: int
    timeout_s: float | None
    state: JobState
    control: Control | None
    attempts: int
    owner: str | None
    lease_until: float | None
    created: float
    started: float | None
    finished: float | None
    run_s: float  # seconds held by a daemon, summed over attempts
    last_error: str | None
    trials_finished: int
    best_value: float | None
    best_arch: str | None
    current_trial: int | None
    current_epoch: int | None
    progress_at: float | None
    memory_limit_gib: float | None
    dropped_archs: frozenset[str]  # too big for the memory limit at enqueue
    baseline_value: float | None  # the constant predictor's val loss, beside best_value
    crashes: int
    estimate: Estimate | None
    current_step: int | None
    epoch_steps: int | None
    trial_epochs: int | None
    step_s: float | None
    last_failure: str | None
    claimed: float | None
    advanced: float | None
    waiting: str | None
    after_job: int | None  # the job it waits for (enqueue --after, a ladder's rung below)
    after_search: bool  # for that job's search only (a ladder rung), not its end
    no_ladder: bool  # queued with --no-ladder: no transfer from smaller budgets
    seeds_finished: int  # the best trial's seed runs finished so far

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> QueuedJob:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["state"] = JobState(values["state"])
        values["control"] = None if values["control"] is None else Control(values["control"])
        values["after_search"], values["no_ladder"] = bool(values["after_search"]), bool(values["no_ladder"])
        values["dropped_archs"] = frozenset(json.loads(values["dropped_archs"] or "[]"))
        values["estimate"] = None if values["estimate"] is None else Estimate.from_dict(json.loads(values["estimate"]))
        return cls(**values)

    def to_row(self) -> dict[str, Any]:
        """The row again, as JSON can carry it (to a worker)."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["dropped_archs"] = json.dumps(sorted(self.dropped_archs))
        row["estimate"] = None if self.estimate is None else json.dumps(self.estimate.as_dict())
        return row

    @property
    def target(self) -> int:
        return self.n_trials

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @cached_property
    def spec(self) -> JobSpec:
        """Its job file as queued, with the command line's overrides."""
        job = parse_job(self.job_text, source=f"job {self.id}", default_name=self.job_name)
        limit = self.memory_limit_gib
        transfer = False if self.no_ladder else None
        return job.with_overrides(
            data=self.data_path, trials=self.n_trials, max_epochs=self.max_epochs, memory_limit_gib=limit,
            transfer=transfer,
        )  # fmt: skip

    @cached_property
    def plan(self) -> StudyPlan:
        """The study plan it stands for; refuses data changed since it was queued."""
        from hpod.study.plan import plan_study
        from hpod.trial.data import check_unchanged

        check_unchanged(self.spec.data, self.data_sha256, f"job {self.id}")
        return replace(plan_study(self.spec, self.budget, self.horizon), excluded=self.dropped_archs)


@dataclass(frozen=True)
class DaemonEntry:
    owner: str
    pid: int
    host: str
    started: float
    heartbeat: float
    paused_reason: str | None
    readings: str | None  # JSON of its latest machine readings
    paused_since: float | None
    window_opens: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DaemonEntry:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Notice:
    time: float
    text: str

    def as_dict(self) -> dict:
        return asdict(self)
