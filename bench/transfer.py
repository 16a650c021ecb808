"""Search compute saved by the budget ladder: per rung above the first, the same study run from
scratch ("independent"), warm-started from the rungs below ("ladder"), and the one-epoch-then-
top-K baseline (Egele et al. 2023: every configuration trained one epoch, the best K trained in
full) given the ladder study's compute, side by side in one run.

The yardstick is the independent study's final best plus one SE, the SE a moving-block
bootstrap (the report's, block = data.bootstrap_block) of that best trial's per-sample val
losses; "to 1 SE" is the epochs (and seconds) each method trained in that rung until its
running best came within it. The rungs below are not counted: both the ladder and independent
studies run them.

    python bench/transfer.py [--smoke] [--seeds N]
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import optuna
from optuna.trial import TrialState

from hpod.job import JobSpec, SearchSpec, TrainSpec, load_job
from hpod.results.baselines import sample_losses
from hpod.results.evaluation import run_outputs
from hpod.results.resample import block_counts, resampled_means, standard_error
from hpod.study.budget import format_budget
from hpod.study.objective import Objective, TrialResources
from hpod.study.plan import best_trial, finished_count, open_study, plan_study
from hpod.supervisor.trials import run_study
from hpod.trial import checkpoint as checkpoint_io
from hpod.trial.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
RUNGS, HORIZON = (20_000, 50_000, 100_000, 200_000), 5
# tiny.yaml's grid with wider d_model and deeper n_layers, so that 200K has a grid of its own
# size (tiny's tops out at four architectures there); the schedule is the default job's
# (bench/pruning.py says why), so a trial stops itself after ~12 epochs as in production.
GRID = {"d_model": (16, 32, 48, 64, 96), "n_layers": (1, 2, 3, 4, 6)}
DEFAULT = SearchSpec()
REPLICATES = 1000
# Random startup trials after the grid's six forced extremes: as many as the ladder transfers,
# so that in the ladder the transferred trials take the place of the random ones one for one.
STARTUP = 6 + SearchSpec().transfer_trials


@dataclasses.dataclass
class Curve:
    """A study's trials in the order they finished: cumulative epochs and seconds, running best."""

    epochs: list[int] = dataclasses.field(default_factory=list)
    seconds: list[float] = dataclasses.field(default_factory=list)
    best: list[float] = dataclasses.field(default_factory=list)
    se: float | None = None  # of the final best's val loss (independent studies only)
    sources: list[str] = dataclasses.field(default_factory=list)  # transferred trials' sources

    def reached(self, target: float) -> tuple[int, float] | None:
        """(epochs, seconds) at which the running best first came within `target`."""
        for epochs, seconds, best in zip(self.epochs, self.seconds, self.best, strict=True):
            if best <= target:
                return epochs, seconds
        return None


def bench_job(seed: int, trials: int, epochs: tuple[int, ...], transfer: bool, name: str = "tiny") -> JobSpec:
    job = load_job(ROOT / "jobs" / "tiny.yaml")
    search = dataclasses.replace(
        job.search,
        seed=seed,
        n_trials=trials,
        n_startup_trials=STARTUP,
        epochs=epochs,
        warmup_steps=DEFAULT.warmup_steps,
        final_seeds=0,
        transfer=transfer,
    )
    grid = dataclasses.replace(job.grid, **GRID)
    train = dataclasses.replace(job.train, patience=TrainSpec().patience)
    return dataclasses.replace(job, name=name, search=search, grid=grid, train=train)


def run_curve(job: JobSpec, budget: int, storage, checkpoints: Path | None = None, compute: int | None = None) -> Curve:
    """Run one study to its trial count, or until `compute` epochs are spent, and trace it."""
    plan = plan_study(job, budget, HORIZON)
    dataset = load_dataset(job.data, HORIZON)
    study = open_study(plan, storage)
    curve, start = Curve(), time.perf_counter()

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = trial.value if trial.state == TrialState.COMPLETE else float("inf")
        curve.epochs.append((curve.epochs[-1] if curve.epochs else 0) + trial.user_attrs.get("epochs_run", 0))
        curve.seconds.append(time.perf_counter() - start)
        curve.best.append(min([value, *curve.best[-1:]]))
        if "transferred_from" in trial.user_attrs:
            curve.sources.append(trial.user_attrs["transferred_from"])

    objective = Objective(plan, dataset, study.sampler, resources=TrialResources(checkpoints=checkpoints))
    while finished_count(study) < job.search.n_trials and (
        compute is None or not curve.epochs or curve.epochs[-1] < compute
    ):
        run_study(study, objective, finished_count(study) + 1, [on_trial])
    if checkpoints is not None:
        curve.se = val_se(plan, study, dataset, checkpoints)
    return curve


def val_se(plan, study: optuna.Study, dataset, checkpoints: Path) -> float:
    """The bootstrap SE of the best trial's mean val loss, over blocks of val samples."""
    best = best_trial(study)
    weights = checkpoint_io.load(checkpoint_io.best_path(checkpoints, study.study_name, best.number))
    outputs = run_outputs(plan, best, dataset, weights["model"], "val")
    losses = sample_losses(outputs, dataset.targets[dataset.splits["val"]], dataset.task)
    counts = block_counts(len(losses), plan.job.data.bootstrap_block, REPLICATES, np.random.default_rng(0))
    return standard_error(resampled_means(losses, counts)[:, 0])


def ladder(case: tuple[int, int, tuple[int, ...], bool]) -> list[Curve]:
    """Every rung in order on one storage: with transfer, each starts from the ones below."""
    seed, trials, epochs, transfer = case
    quiet()
    storage = optuna.storages.InMemoryStorage()
    job = bench_job(seed, trials, epochs, transfer)
    with tempfile.TemporaryDirectory() as checkpoints:
        return [run_curve(job, budget, storage, None if transfer else Path(checkpoints)) for budget in RUNGS]


def one_epoch_top_k(case: tuple[int, int, tuple[int, ...], int, int]) -> Curve:
    """Train `trials` configurations one epoch each (the grid's forced extremes, then random
    ones), then the best of them in full, in rank order, until `compute` epochs are spent in all."""
    seed, trials, epochs, budget, compute = case
    quiet()
    storage = optuna.storages.InMemoryStorage()
    job = bench_job(seed, trials, epochs, transfer=False)
    screen_job = dataclasses.replace(
        job, name="screen", search=dataclasses.replace(job.search, epochs=(1,), n_startup_trials=trials)
    )
    screen = run_curve(screen_job, budget, storage)
    screened = optuna.load_study(study_name=plan_study(screen_job, budget, HORIZON).name, storage=storage)
    ranked = sorted(screened.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    search = dataclasses.replace(job.search, forced_extremes=False, pruner="none", n_trials=len(ranked))
    full_job = dataclasses.replace(job, name="full", search=search)
    full = optuna.create_study(study_name=plan_study(full_job, budget, HORIZON).name, storage=storage)
    for trial in ranked:
        full.enqueue_trial({**trial.params, "epochs": max(epochs)})
    spent = screen.epochs[-1]
    rest = run_curve(full_job, budget, storage, compute=compute - spent)
    return Curve(
        epochs=screen.epochs + [spent + e for e in rest.epochs],
        seconds=screen.seconds + [screen.seconds[-1] + s for s in rest.seconds],
        best=[float("inf")] * len(screen.epochs) + rest.best,  # a one-epoch loss is not a result
    )


def quiet() -> None:
    """One thread per study, so studies run side by side on the machine's cores."""
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def main(smoke: bool, seeds: int) -> None:
    trials, epochs = (10, (2, 3)) if smoke else (20, DEFAULT.epochs)
    print(
        f"rungs {', '.join(map(format_budget, RUNGS))}, h{HORIZON}, tiny.yaml's grid widened to d_model "
        f"{list(GRID['d_model'])} n_layers {list(GRID['n_layers'])}, epochs {'/'.join(map(str, epochs))}, "
        f"patience {TrainSpec().patience}, {trials} trials a study, {SearchSpec().transfer_trials} transferred, "
        f"{seeds} seeds, each ladder in its own process on one core, {os.cpu_count()} at a time"
    )
    cases = [(seed, trials, epochs, transfer) for seed in range(seeds) for transfer in (False, True)]
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        ladders = dict(zip(((c[0], c[3]) for c in cases), pool.map(ladder, cases), strict=True))
        top_k_cases = [
            (seed, trials, epochs, budget, ladders[seed, True][i].epochs[-1])
            for seed in range(seeds)
            for i, budget in enumerate(RUNGS)
            if i
        ]
        top_k = dict(zip(((c[0], c[3]) for c in top_k_cases), pool.map(one_epoch_top_k, top_k_cases), strict=True))
    print_table(ladders, top_k, seeds)


def print_table(ladders: dict, top_k: dict, seeds: int) -> None:
    print(
        f"{'seed':>4} {'rung':>5} {'method':>11} {'final':>7} {'target':>7} {'epochs':>6} {'to 1SE':>6} "
        f"{'s to 1SE':>8} {'to best':>7}"
    )
    ratios: dict[int, list[float]] = {budget: [] for budget in RUNGS[1:]}
    misses: list[str] = []
    for seed in range(seeds):
        for i, budget in enumerate(RUNGS[1:], start=1):
            alone, warm = ladders[seed, False][i], ladders[seed, True][i]
            target = alone.best[-1] + alone.se
            for method, curve in (("independent", alone), ("ladder", warm), ("1-epoch+K", top_k[seed, budget])):
                hit, matched = curve.reached(target), curve.reached(alone.best[-1])
                print(
                    f"{seed:>4} {format_budget(budget):>5} {method:>11} {curve.best[-1]:>7.4f} {target:>7.4f} "
                    f"{curve.epochs[-1]:>6} {'-' if hit is None else hit[0]:>6} "
                    f"{'-' if hit is None else f'{hit[1]:.0f}':>8} {'-' if matched is None else matched[0]:>7}"
                )
            hit_alone, hit_warm = alone.reached(target), warm.reached(target)
            if hit_warm is None:
                misses.append(f"seed {seed} {format_budget(budget)}: the ladder never came within 1 SE")
            else:
                ratios[budget].append(hit_alone[0] / hit_warm[0])
            if warm.best[-1] > target:
                misses.append(f"seed {seed} {format_budget(budget)}: the ladder's final best is worse by over 1 SE")
            print(f"{'':>4} {'':>5} {'sources':>11} {', '.join(warm.sources) or '-'}  (SE {alone.se:.4f})")
    for budget, values in ratios.items():
        if values:
            shown = ", ".join(f"{v:.2f}" for v in values)
            print(
                f"{format_budget(budget)}: epochs to 1 SE, independent / ladder: "
                f"median {statistics.median(values):.2f}x ({shown})"
            )
    for miss in misses:
        print(miss)


if __name__ == "__main__":
    seeds = int(sys.argv[sys.argv.index("--seeds") + 1]) if "--seeds" in sys.argv else 2
    main(smoke="--smoke" in sys.argv, seeds=1 if "--smoke" in sys.argv else seeds)
