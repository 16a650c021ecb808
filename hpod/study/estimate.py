"""How long a study will take on this machine, known before it is queued: training steps of the
grid's smallest, median and largest architectures timed here (cached per architecture, device
and data in the state directory), scaled to an epoch, a trial and the whole study, each as a
range, since a trial's epochs are sampled, early stopping and pruning end some sooner, and the
architectures differ."""

from __future__ import annotations

import math

from hpod.study.duration import Estimate
from hpod.study.plan import StudyPlan
from hpod.trial.data import Dataset
from hpod.trial.device import pick_device
from hpod.trial.grid import GridEntry
from hpod.trial.memory import feasible, job_limit
from hpod.trial.probe import ChoiceCache, fitting_micro_batches, predicted_peaks, time_micro_step
from hpod.trial.train import TrainConfig, steps_per_epoch

WORKER_START_S = 2.0  # a trial's worker process: interpreter, torch, data (bench/overhead.py)
EVAL_COST = 1 / 3  # a validation sample's forward pass against a training sample's step


TIMED_WORK = 2 * 10**9  # parameters × rows of a timed step; past it, fewer rows are timed and scaled


def representative(grid: list[GridEntry]) -> list[GridEntry]:
    """The smallest, median and largest architectures by parameters (fewer if the grid is small)."""
    ordered = sorted(grid, key=lambda e: (e.params, e.arch.key))
    picks = [ordered[0], ordered[len(ordered) // 2], ordered[-1]]
    return list({e.arch.key: e for e in picks}.values())


def epoch_seconds(plan: StudyPlan, entry: GridEntry, dataset: Dataset, device: str, times: dict) -> float:
    """One epoch of `entry`: its micro-batch steps at the largest micro-batch the memory model
    lets it use, then the validation pass."""
    train = plan.job.train
    predicted = predicted_peaks(entry.arch, entry.params, dataset.shape, train.effective_batch, device)
    micro = next(iter(fitting_micro_batches(predicted, job_limit(plan.job.guard, device))), 1)
    model_config = entry.arch.model_config(
        dataset.shape, dropout=0.1, head_dropout=train.head_dropout, revin=train.revin
    )
    timed = max(1, min(micro, TIMED_WORK // entry.params))  # a 100M model's step is timed on a few rows
    key = f"{ChoiceCache.key(entry.arch, device, model_config, train.effective_batch)}|m{micro}"
    if key not in times:
        config = TrainConfig(1e-3, 1e-4, 10, 1, effective_batch=train.effective_batch, micro_batch=timed, device=device)
        times[key] = {"seconds": time_micro_step(model_config, config, dataset, timed) * micro / timed}
    step_s = times[key]["seconds"]
    micro_steps = steps_per_epoch(dataset, train.effective_batch) * math.ceil(train.effective_batch / micro)
    val_steps = math.ceil(len(dataset.splits["val"]) / micro) * EVAL_COST
    return (micro_steps + val_steps) * step_s


def estimate_study(plan: StudyPlan, dataset: Dataset, times: dict) -> Estimate | None:
    """The study's estimate; `times` holds the step times known (state/step_times.json) and gets
    those timed now, for the caller to keep once the job is queued. None when no architecture
    can train in this machine's memory (a study forced into the queue for a bigger machine)."""
    device = pick_device(plan.job.train.device)
    candidates = [e for e in plan.grid if e.arch.key not in plan.excluded]
    grid, _ = feasible(candidates, dataset.shape, device, job_limit(plan.job.guard, device))
    if not grid:
        return None
    timed = {e.arch.key: epoch_seconds(plan, e, dataset, device, times) for e in representative(grid)}
    epoch = (min(timed.values()), max(timed.values()))
    search = plan.job.search
    fewest = 1 if search.pruner != "none" else min(min(search.epochs), plan.job.train.patience + 1, plan.max_epochs)
    trial = (fewest * epoch[0] + WORKER_START_S, plan.max_epochs * epoch[1] + WORKER_START_S)
    runs = search.n_trials + search.final_seeds
    return Estimate(device, epoch, trial, (runs * trial[0], runs * trial[1]), timed)
