"""How long a study will take on this machine, known before it is queued: training steps of the
grid's smallest, median and largest architectures timed here (cached per architecture, device
and data in the state directory), scaled to an epoch, a trial and the whole study, each as a
range, since a trial's epochs are sampled, early stopping and pruning end some sooner, and the
architectures differ.

Timing is bounded, since enqueue may run beside a night's trials: a step adds at most an eighth
of the job's memory limit (a larger model is timed as a one-layer model of its width and the
deepest that fits, and fitted as a fixed cost plus one per layer, since every layer costs the
same), and past
TIMING_LIMIT_S the architectures left are scaled from those timed by their FLOPs. What was
measured otherwise is said in the estimate's notes."""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from hpod.job import TrainSpec
from hpod.study.calibration import Calibration
from hpod.study.duration import Estimate
from hpod.study.plan import StudyPlan
from hpod.trial.data import Dataset
from hpod.trial.device import pick_device
from hpod.trial.grid import Arch, GridEntry, count_parameters, scaled_by_flops
from hpod.trial.memory import GIB, estimate, feasible, job_limit
from hpod.trial.model import DataShape
from hpod.trial.probe import ChoiceCache, StepSeconds, fitting_micro_batches, predicted_peaks, time_micro_step
from hpod.trial.train import TrainConfig, steps_per_epoch

log = logging.getLogger(__name__)

WORKER_START_S = 2.0  # a trial's worker process: interpreter, torch, data (bench/overhead.py)
EVAL_COST = 1 / 3  # a validation sample's forward pass against a training sample's step
TIMED_WORK = 2 * 10**9  # parameters × rows of a timed step; past it, fewer rows are timed and scaled
TIMING_SHARE = 1 / 8  # of the job's memory limit, the most one timed step may take
TIMING_LIMIT_S = 60.0  # an enqueue's timing; past it, architectures are scaled from those timed


@dataclass
class Timing:
    """What an enqueue may still spend on timing steps, and what it measured otherwise."""

    bytes: int
    deadline: float
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # architecture key → why it was not timed
    announce: Callable[[str], None] | None = None  # told what is timed, while it is (enqueue's status line)

    @classmethod
    def start(
        cls, memory_limit: int, seconds: float = TIMING_LIMIT_S, announce: Callable[[str], None] | None = None
    ) -> Timing:
        return cls(int(memory_limit * TIMING_SHARE), time.monotonic() + seconds, announce=announce)

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.deadline


def representative(grid: list[GridEntry]) -> list[GridEntry]:
    """The smallest, median and largest architectures by parameters (fewer if the grid is small)."""
    ordered = sorted(grid, key=lambda e: (e.params, e.arch.key))
    picks = [ordered[0], ordered[len(ordered) // 2], ordered[-1]]
    return list({e.arch.key: e for e in picks}.values())


def timed_rows(
    arch: Arch, shape: DataShape, micro: int, device: str, timing: Timing, most: int | None = None
) -> int | None:
    """The most rows, up to `micro` (and `most`), a timed step of `arch` can take within
    TIMED_WORK and the timing's memory; None when not even one row fits."""
    params = count_parameters(arch, shape)
    rows = max(1, min(micro, TIMED_WORK // params, micro if most is None else most))
    while estimate(arch, params, shape, rows, device).peak > timing.bytes:
        if rows == 1:
            return None
        rows //= 2
    return rows


def timed_model(arch: Arch, shape: DataShape, train: TrainSpec):
    """The model a timed step trains: the job's head and RevIN, a typical dropout."""
    return arch.model_config(shape, dropout=0.1, head_dropout=train.head_dropout, revin=train.revin)


def step_time(arch: Arch, rows: int, micro: int, dataset: Dataset, train: TrainSpec, device: str) -> StepSeconds:
    """A micro-step of `micro` rows, from a step of `rows` timed here: forward and backward
    scale with the rows, the optimizer step does not."""
    model_config = timed_model(arch, dataset.shape, train)
    config = TrainConfig(1e-3, 1e-4, 10, 1, effective_batch=train.effective_batch, micro_batch=rows, device=device)
    timed = time_micro_step(model_config, config, dataset, rows)
    return StepSeconds(timed.compute * micro / rows, timed.update)


def per_layer(one: float, deep: float, layers: int, n_layers: int) -> float:
    """A fixed cost plus one layer's per layer, from a one-layer model's and a `layers`-layer
    one's (proportional to layers when noise makes the difference negative)."""
    if deep <= one:
        return deep * n_layers / layers
    return one + (deep - one) * (n_layers - 1) / (layers - 1)


def proxy_depth(arch: Arch, rows: int, shape: DataShape, device: str, timing: Timing) -> int | None:
    """The most layers, fewer than `arch`'s (at least 2), whose step of `rows` rows fits the
    timing's memory: the deeper the proxy, the less its timing noise is multiplied."""
    fitting = [
        n
        for n in range(2, arch.n_layers)
        if timed_rows(dataclasses.replace(arch, n_layers=n), shape, rows, device, timing, rows) == rows
    ]
    return max(fitting, default=None)


def layer_fit(
    arch: Arch, micro: int, dataset: Dataset, train: TrainSpec, device: str, timing: Timing
) -> tuple[StepSeconds, int] | None:
    """A micro-step of `arch` from steps of its one-layer model and of the deepest that fits the
    timing's memory, at the same rows (the full model's, or fewer when even two layers need
    it); with that depth. None when a two-layer model's step of one row does not fit."""
    rows = max(1, min(micro, TIMED_WORK // count_parameters(arch, dataset.shape)))
    depth = proxy_depth(arch, rows, dataset.shape, device, timing)
    if depth is None:
        depth, rows = 2, timed_rows(dataclasses.replace(arch, n_layers=2), dataset.shape, micro, device, timing)
        if rows is None:
            return None
    one, deep = (
        step_time(dataclasses.replace(arch, n_layers=n), rows, micro, dataset, train, device) for n in (1, depth)
    )
    n = arch.n_layers
    return StepSeconds(
        per_layer(one.compute, deep.compute, depth, n), per_layer(one.update, deep.update, depth, n)
    ), depth


def micro_step_seconds(
    entry: GridEntry, micro: int, dataset: Dataset, train: TrainSpec, device: str, timing: Timing
) -> tuple[StepSeconds, str] | None:
    """(one micro-step, how it was found), or None when it could not be timed within the
    timing's memory."""
    rows = timed_rows(entry.arch, dataset.shape, micro, device, timing)
    if rows is not None:
        return step_time(entry.arch, rows, micro, dataset, train, device), "timed"
    if entry.arch.n_layers <= 2:
        return None
    fitted = layer_fit(entry.arch, micro, dataset, train, device, timing)
    return None if fitted is None else (fitted[0], f"timed as 1 and {fitted[1]} layers")


def epoch_seconds(
    plan: StudyPlan, entry: GridEntry, dataset: Dataset, device: str, times: dict, timing: Timing, first: bool = True
) -> float | None:
    """One epoch of `entry`: its micro-batch steps at the largest micro-batch the memory model
    lets it use, an optimizer step per effective batch, then the validation pass. None, with the
    reason in `timing.skipped`, when it could not be timed: not yet known and past the timing's
    deadline (which a study's `first` architecture ignores, so every study rests on a
    measurement), or too large for the timing's memory even as two layers."""
    train = plan.job.train
    predicted = predicted_peaks(entry.arch, entry.params, dataset.shape, train.effective_batch, device)
    micro = next(iter(fitting_micro_batches(predicted, job_limit(plan.job.guard, device))), 1)
    model_config = timed_model(entry.arch, dataset.shape, train)
    key = f"{ChoiceCache.key(entry.arch, device, model_config, train.effective_batch)}|m{micro}"
    if "compute" not in times.get(key, {}):  # unknown, or kept by an hpod that timed steps whole
        if timing.expired and not first:
            timing.skipped[entry.arch.key] = "timing passed its limit"
            return None
        if timing.announce is not None:
            timing.announce(f"{plan.name}: timing {entry.arch.key} ({entry.params:,} parameters) on {device}")
        found = micro_step_seconds(entry, micro, dataset, train, device, timing)
        if found is None:
            timing.skipped[entry.arch.key] = f"over the {timing.bytes / GIB:.1f} GiB timing may use"
            return None
        times[key] = asdict(found[0]) | {"how": found[1]}
    step = times[key]
    if step["how"] != "timed":
        timing.notes.append(f"{entry.arch.key} {step['how']}: its full step needs more memory than timing may use")
    steps = steps_per_epoch(dataset, train.effective_batch)
    micro_steps = steps * math.ceil(train.effective_batch / micro)
    val_steps = math.ceil(len(dataset.splits["val"]) / micro) * EVAL_COST
    return (micro_steps + val_steps) * step["compute"] + steps * step["update"]


def scaled_epochs(timed: dict[str, float], skipped: list[GridEntry], shape: DataShape, timing: Timing) -> dict:
    """Epochs of the architectures not timed, from the timed one nearest in FLOPs."""
    scaled = {}
    for entry in skipped:
        scaled[entry.arch.key], source = scaled_by_flops(entry.arch, timed, shape)
        why = timing.skipped.pop(entry.arch.key)
        timing.notes.append(f"{entry.arch.key} scaled from {source} by FLOPs ({why})")
    return scaled


def estimate_study(
    plan: StudyPlan, dataset: Dataset, times: dict, timing: Timing | None = None, calibration: Calibration | None = None
) -> Estimate | None:
    """The study's estimate; `times` holds the step times known (state/step_times.json) and gets
    those timed now, for the caller to keep once the job is queued; `calibration`, what this
    machine measured of the job file's earlier runs, gives its expected figure. None when no
    architecture can train in this machine's memory (a study forced into the queue for a bigger
    machine), or none could be timed within the timing's bounds."""
    device = pick_device(plan.job.train.device)
    limit = job_limit(plan.job.guard, device)
    timing = Timing.start(limit.bytes) if timing is None else timing
    candidates = [e for e in plan.grid if e.arch.key not in plan.excluded]
    grid, _ = feasible(candidates, dataset.shape, device, limit)
    if not grid:
        return None
    timed: dict[str, float] = {}
    skipped = []
    for entry in representative(grid):
        seconds = epoch_seconds(plan, entry, dataset, device, times, timing, first=not timed)
        if seconds is None:
            skipped.append(entry)
        else:
            timed[entry.arch.key] = seconds
    if not timed:
        log.warning(
            "%s: no estimate: %s is %s", plan.name, skipped[0].arch.key, timing.skipped.pop(skipped[0].arch.key)
        )
        timing.skipped.clear()
        return None
    timed |= scaled_epochs(timed, skipped, dataset.shape, timing)
    epoch = (min(timed.values()), max(timed.values()))
    search = plan.job.search
    fewest = 1 if search.pruner != "none" else min(min(search.epochs), plan.job.train.patience + 1, plan.max_epochs)
    trial = (fewest * epoch[0] + WORKER_START_S, plan.max_epochs * epoch[1] + WORKER_START_S)
    runs = search.n_trials + search.final_seeds
    notes = tuple(timing.notes)
    timing.notes.clear()
    estimate = Estimate(device, epoch, trial, (runs * trial[0], runs * trial[1]), timed, notes, runs=runs)
    return estimate if calibration is None else calibrated(estimate, plan, calibration)


def calibrated(estimate: Estimate, plan: StudyPlan, calibration: Calibration) -> Estimate:
    """The estimate with a run's expected seconds from this machine's earlier runs of the job
    file: the timed architectures' epochs at the measured speed, times the epochs runs of their
    sizes trained, plus what a run cost besides (the mean over the architectures timed, as a
    search samples across its grid)."""
    params = {e.arch.key: e.params for e in plan.grid}
    speed = 1.0 if calibration.speed is None else calibration.speed
    extra = WORKER_START_S if calibration.overhead_s is None else calibration.overhead_s
    epochs = {key: calibration.epochs_at(params[key], plan.max_epochs) for key in estimate.timed}
    run_s = statistics.fmean(epochs[key] * seconds * speed + extra for key, seconds in estimate.timed.items())
    basis = calibration.describe(statistics.fmean(epochs.values()))
    return dataclasses.replace(estimate, calibrated_run_s=run_s, basis=basis)
