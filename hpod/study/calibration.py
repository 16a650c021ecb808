"""What this machine measured of a job file's earlier runs, and how it corrects the estimate timed
at enqueue. Timing a few steps cannot know three things a study's duration rests on: how many
epochs its runs train before early stopping or pruning ends them (the timed range spans one epoch
to the most planned), how far a real epoch lands from the timed steps (data loading, a machine
busy with other work), and what a run costs besides its epochs (the worker's start, the memory
probe, the storage, the evaluation at the end). Each is measured from the finished runs (search
trials and seed runs) of the same job file on this host and device."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import optuna

from hpod.records import DEVICE, EPOCHS_RUN, LEARNING_CURVE, PAUSED_S, WORKER
from hpod.study.plan import FINISHED
from hpod.trial.grid import Arch, scaled_by_flops
from hpod.trial.model import DataShape

NEAREST = 8  # runs of the nearest sizes whose epochs an architecture's expected epochs are the mean of


@dataclass(frozen=True)
class Run:
    """A finished search trial or seed run, as the calibration uses it."""

    arch: Arch
    params: int
    epochs: int
    epoch_s: float | None  # seconds per epoch (the learning curve's); None from an hpod that did not record it
    paused_s: float


@dataclass(frozen=True)
class JobRuns:
    """One earlier job's study: its finished runs, what its estimate timed, and how long a daemon
    held it once it was done (None while not done, or when other jobs shared its study)."""

    runs: list[Run]
    timed: dict[str, float]  # its estimate's: architecture key → timed seconds per epoch
    shape: DataShape
    held_s: float | None


def same_device(recorded: str | None, device: str) -> bool:
    return recorded is not None and recorded.split(":")[0] == device.split(":")[0]


def finished_runs(studies: Iterable[optuna.Study], host: str, device: str) -> list[Run]:
    """The finished runs of these studies that a worker on `host` trained on `device`: an
    imported trial or another host's on a shared storage measured another machine."""
    runs = []
    for study in studies:
        for trial in study.get_trials(deepcopy=False, states=FINISHED):
            attrs = trial.user_attrs
            worker = attrs.get(WORKER, "")
            if worker.rsplit(":", 2)[0] != host or not same_device(attrs.get(DEVICE), device):
                continue
            if EPOCHS_RUN not in attrs or "param_count" not in attrs:
                continue
            seconds = [r.get("seconds") for r in attrs.get(LEARNING_CURVE, [])]
            epoch_s = None if not seconds or None in seconds else sum(seconds) / len(seconds)
            arch = Arch(attrs["d_model"], attrs["n_layers"], attrs["n_heads"], attrs["d_ff"])
            runs.append(Run(arch, attrs["param_count"], attrs[EPOCHS_RUN], epoch_s, attrs.get(PAUSED_S) or 0.0))
    return runs


def timed_epoch_s(arch: Arch, timed: dict[str, float], shape: DataShape) -> float | None:
    """The epoch the estimate's timing predicts for `arch`: its own timed epoch, else scaled as
    the estimate scales an architecture it did not time."""
    if arch.key in timed:
        return timed[arch.key]
    return scaled_by_flops(arch, timed, shape)[0] if timed else None


@dataclass(frozen=True)
class Calibration:
    job_name: str
    runs: list[Run]
    studies: int
    speed: float | None  # a measured epoch over the timed one (median over runs)
    overhead_s: float | None  # a run's seconds besides its epochs (median over done jobs)

    def epochs_at(self, params: int, most: int) -> float:
        """Epochs a run of `params` parameters is expected to train: the mean of the runs of the
        nearest sizes, each capped at `most` (the plan's most epochs)."""
        nearest = sorted(self.runs, key=lambda r: abs(math.log(r.params / params)))[:NEAREST]
        return statistics.fmean(min(r.epochs, most) for r in nearest)

    def describe(self, epochs: float) -> str:
        """What the calibrated figure rests on, in a line."""
        parts = [f"{epochs:.1f} epochs a run at these sizes"]
        if self.speed is not None:
            parts.append(f"an epoch {self.speed:.2f}× the timed steps")
        if self.overhead_s is not None:
            parts.append(f"{self.overhead_s:.1f} s a run besides its epochs")
        studies = f"{self.studies} stud{'y' if self.studies == 1 else 'ies'}"
        return f"calibrated on {len(self.runs)} runs of {studies} of {self.job_name} here: " + ", ".join(parts)


def speed(jobs: list[JobRuns]) -> float | None:
    """The median of each timed run's measured epoch over the epoch its job's timing predicted."""
    ratios = []
    for job in jobs:
        for run in job.runs:
            predicted = timed_epoch_s(run.arch, job.timed, job.shape)
            if run.epoch_s is not None and predicted:
                ratios.append(run.epoch_s / predicted)
    return statistics.median(ratios) if ratios else None


def overhead(jobs: list[JobRuns]) -> float | None:
    """The median over done jobs of the seconds a run was held besides its epochs and pauses."""
    per_run = []
    for job in jobs:
        if job.held_s is None or not job.runs or any(r.epoch_s is None for r in job.runs):
            continue
        trained = sum(r.epochs * r.epoch_s + r.paused_s for r in job.runs)
        per_run.append(max(0.0, job.held_s - trained) / len(job.runs))
    return statistics.median(per_run) if per_run else None


def calibrate(job_name: str, jobs: list[JobRuns]) -> Calibration | None:
    """The calibration these earlier jobs give; None when none finished a run here."""
    measured = [job for job in jobs if job.runs]
    if not measured:
        return None
    runs = [run for job in measured for run in job.runs]
    return Calibration(job_name, runs, len(measured), speed(measured), overhead(measured))
