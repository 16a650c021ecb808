"""Search compute saved by the budget ladder: per rung above the first, the same study run from
scratch ("independent"), warm-started from the rungs below ("ladder"), and the one-epoch-then-
top-K baseline (Egele et al. 2023: every configuration trained one epoch, the best K trained in
full) given the ladder study's compute, side by side in one run.

The yardstick is the independent study's final best plus one SE, the SE a moving-block
bootstrap (the report's, block = data.bootstrap_block) of that best trial's per-sample val
losses; "to 1 SE" is the epochs (and seconds) each method trained in that rung until its
running best came within it. That SE is of the loss's level, mostly which samples val holds,
and is shared by every configuration scored on the same samples; so "to 1pSE" also counts the
epochs until the running best's mean per-sample gap to the independent best is within one SE of
that gap (the same bootstrap, paired: the same blocks of both), the noise that can tell two
configurations apart. The rungs below are not counted: both the ladder and independent studies
run them.

    python bench/transfer.py [--smoke] [--seeds N] [--target threshold|volatility]

--target volatility reads the bundled data with one column added, log(high / low), and predicts
it h rows ahead (MSE): the next week's trading range, which clusters and so has signal a search
can find, unlike the default threshold target, on which every architecture lands within 1 SE.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
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
import pandas as pd
from optuna.trial import TrialState

from hpod.job import DataSpec, JobSpec, SearchSpec, TrainSpec, load_job
from hpod.records import BASELINE_VAL_LOSS
from hpod.results.baselines import sample_losses
from hpod.results.evaluation import run_outputs
from hpod.results.resample import block_counts, resampled_means, standard_error
from hpod.study.budget import format_budget
from hpod.study.objective import Objective, TrialResources
from hpod.study.plan import best_trial, finished_count, open_study, plan_study
from hpod.supervisor.trials import run_study
from hpod.trial import checkpoint as checkpoint_io
from hpod.trial.data import data_file, load_dataset

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
    samples: list[np.ndarray | None] = dataclasses.field(default_factory=list)  # the running best's val losses
    se: float | None = None  # of the final best's mean val loss
    constant: float | None = None  # the constant predictor's val loss on the same split
    sources: list[str] = dataclasses.field(default_factory=list)  # transferred trials' sources

    def reached(self, target: float) -> tuple[int, float] | None:
        """(epochs, seconds) at which the running best first came within `target`."""
        for epochs, seconds, best in zip(self.epochs, self.seconds, self.best, strict=True):
            if best <= target:
                return epochs, seconds
        return None

    def reached_paired(self, reference: np.ndarray, counts: np.ndarray) -> tuple[int, float] | None:
        """(epochs, seconds) at which the running best's val loss first came within one SE of
        `reference`'s, the SE that of the mean per-sample difference on the same val samples."""
        for epochs, seconds, losses in zip(self.epochs, self.seconds, self.samples, strict=True):
            if losses is None:
                continue
            gap = losses - reference
            if gap.mean() <= standard_error(resampled_means(gap, counts)[:, 0]):
                return epochs, seconds
        return None


@dataclasses.dataclass(frozen=True)
class Setting:
    """What one ladder (or baseline) of the run is given: its seed, trial count, epochs, data."""

    seed: int
    trials: int
    epochs: tuple[int, ...]
    data: DataSpec


def volatility_data(directory: Path) -> DataSpec:
    """The bundled series with log(high / low) as a column, predicted h rows ahead."""
    frame = pd.read_csv(data_file(DataSpec()))
    frame["log_range"] = np.log(frame["high"] / frame["low"])
    path = directory / "sp500_range.csv"
    frame.to_csv(path, index=False)
    return DataSpec(path=str(path), target="column", target_column="log_range")


def bench_job(setting: Setting, transfer: bool, name: str = "tiny") -> JobSpec:
    job = load_job(ROOT / "jobs" / "tiny.yaml")
    search = dataclasses.replace(
        job.search,
        seed=setting.seed,
        n_trials=setting.trials,
        n_startup_trials=STARTUP,
        epochs=setting.epochs,
        warmup_steps=DEFAULT.warmup_steps,
        final_seeds=0,
        transfer=transfer,
    )
    grid = dataclasses.replace(job.grid, **GRID)
    train = dataclasses.replace(job.train, patience=TrainSpec().patience)
    return dataclasses.replace(job, name=name, search=search, grid=grid, train=train, data=setting.data)


def run_curve(job: JobSpec, budget: int, storage, checkpoints: Path, compute: int | None = None) -> Curve:
    """Run one study to its trial count, or until `compute` epochs are spent, and trace it."""
    plan = plan_study(job, budget, HORIZON)
    dataset = load_dataset(job.data, HORIZON)
    study = open_study(plan, storage)
    curve, start = Curve(), time.perf_counter()

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = trial.value if trial.state == TrialState.COMPLETE else float("inf")
        curve.epochs.append((curve.epochs[-1] if curve.epochs else 0) + trial.user_attrs.get("epochs_run", 0))
        curve.seconds.append(time.perf_counter() - start)
        improved = not curve.best or value < curve.best[-1]
        curve.best.append(min([value, *curve.best[-1:]]))
        kept = curve.samples[-1] if curve.samples else None
        curve.samples.append(val_losses(plan, trial, dataset, checkpoints) if improved and value < math.inf else kept)
        if "transferred_from" in trial.user_attrs:
            curve.sources.append(trial.user_attrs["transferred_from"])

    objective = Objective(plan, dataset, study.sampler, resources=TrialResources(checkpoints=checkpoints))
    while finished_count(study) < job.search.n_trials and (
        compute is None or not curve.epochs or curve.epochs[-1] < compute
    ):
        run_study(study, objective, finished_count(study) + 1, [on_trial])
    if curve.samples[-1] is not None:
        counts = block_counts(len(curve.samples[-1]), job.data.bootstrap_block, REPLICATES, np.random.default_rng(0))
        curve.se = standard_error(resampled_means(curve.samples[-1], counts)[:, 0])
    curve.constant = best_trial(study).user_attrs.get(BASELINE_VAL_LOSS)
    return curve


def val_losses(plan, trial: optuna.trial.FrozenTrial, dataset, checkpoints: Path) -> np.ndarray:
    """A trial's per-sample val losses, from its best epoch's weights."""
    weights = checkpoint_io.load(checkpoint_io.best_path(checkpoints, plan.name, trial.number))
    outputs = run_outputs(plan, trial, dataset, weights["model"], "val")
    return np.asarray(sample_losses(outputs, dataset.targets[dataset.splits["val"]], dataset.task))


def ladder(case: tuple[Setting, bool]) -> list[Curve]:
    """Every rung in order on one storage: with transfer, each starts from the ones below."""
    setting, transfer = case
    quiet()
    storage = optuna.storages.InMemoryStorage()
    job = bench_job(setting, transfer)
    with tempfile.TemporaryDirectory() as checkpoints:
        return [run_curve(job, budget, storage, Path(checkpoints)) for budget in RUNGS]


def one_epoch_top_k(case: tuple[Setting, int, int]) -> Curve:
    """Train the setting's trial count of configurations one epoch each (the grid's forced
    extremes, then random ones), then the best of them in full, in rank order, until `compute`
    epochs are spent in all."""
    setting, budget, compute = case
    quiet()
    with tempfile.TemporaryDirectory() as checkpoints:
        return top_k_curve(setting, budget, compute, Path(checkpoints))


def top_k_curve(setting: Setting, budget: int, compute: int, checkpoints: Path) -> Curve:
    storage = optuna.storages.InMemoryStorage()
    job = bench_job(setting, transfer=False)
    screen_job = dataclasses.replace(
        job, name="screen", search=dataclasses.replace(job.search, epochs=(1,), n_startup_trials=setting.trials)
    )
    screen = run_curve(screen_job, budget, storage, checkpoints)
    screened = optuna.load_study(study_name=plan_study(screen_job, budget, HORIZON).name, storage=storage)
    ranked = sorted(screened.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    search = dataclasses.replace(job.search, forced_extremes=False, pruner="none", n_trials=len(ranked))
    full_job = dataclasses.replace(job, name="full", search=search)
    full = optuna.create_study(study_name=plan_study(full_job, budget, HORIZON).name, storage=storage)
    for trial in ranked:
        full.enqueue_trial({**trial.params, "epochs": max(setting.epochs)})
    spent = screen.epochs[-1]
    rest = run_curve(full_job, budget, storage, checkpoints, compute=compute - spent)
    return Curve(  # a one-epoch loss is not a result
        epochs=screen.epochs + [spent + e for e in rest.epochs],
        seconds=screen.seconds + [screen.seconds[-1] + s for s in rest.seconds],
        best=[math.inf] * len(screen.epochs) + rest.best,
        samples=[None] * len(screen.epochs) + rest.samples,
    )


def quiet() -> None:
    """One thread per study, so studies run side by side on the machine's cores."""
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def main(smoke: bool, seeds: int, target: str) -> None:
    trials, epochs = (10, (2, 3)) if smoke else (20, DEFAULT.epochs)
    print(
        f"rungs {', '.join(map(format_budget, RUNGS))}, h{HORIZON}, target {target}, tiny.yaml's grid widened to "
        f"d_model {list(GRID['d_model'])} n_layers {list(GRID['n_layers'])}, epochs {'/'.join(map(str, epochs))}, "
        f"patience {TrainSpec().patience}, {trials} trials a study, {SearchSpec().transfer_trials} transferred, "
        f"{seeds} seeds, each ladder in its own process on one core, {os.cpu_count()} at a time"
    )
    with tempfile.TemporaryDirectory() as directory:
        data = volatility_data(Path(directory)) if target == "volatility" else DataSpec()
        settings = [Setting(seed, trials, epochs, data) for seed in range(seeds)]
        cases = [(setting, transfer) for setting in settings for transfer in (False, True)]
        with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
            ladders = dict(zip(((c[0].seed, c[1]) for c in cases), pool.map(ladder, cases), strict=True))
            top_k_cases = [
                (setting, budget, ladders[setting.seed, True][i].epochs[-1])
                for setting in settings
                for i, budget in enumerate(RUNGS)
                if i
            ]
            runs = pool.map(one_epoch_top_k, top_k_cases)
            top_k = dict(zip(((c[0].seed, c[1]) for c in top_k_cases), runs, strict=True))
    print_table(ladders, top_k, seeds)


def print_table(ladders: dict, top_k: dict, seeds: int) -> None:
    print(
        f"{'seed':>4} {'rung':>5} {'method':>11} {'final':>7} {'target':>7} {'epochs':>6} {'to 1SE':>6} "
        f"{'s to 1SE':>8} {'to 1pSE':>7} {'to best':>7}"
    )
    ratios: dict[str, dict[int, list[float]]] = {
        "1 SE": {b: [] for b in RUNGS[1:]},
        "1 paired SE": {b: [] for b in RUNGS[1:]},
    }
    misses: list[str] = []
    for seed in range(seeds):
        for i, budget in enumerate(RUNGS[1:], start=1):
            alone, warm = ladders[seed, False][i], ladders[seed, True][i]
            target, reference = alone.best[-1] + alone.se, alone.samples[-1]
            counts = block_counts(len(reference), DataSpec().bootstrap_block, REPLICATES, np.random.default_rng(0))
            hits = {}
            for method, curve in (("independent", alone), ("ladder", warm), ("1-epoch+K", top_k[seed, budget])):
                hit, paired = curve.reached(target), curve.reached_paired(reference, counts)
                matched = curve.reached(alone.best[-1])
                hits[method] = (hit, paired)
                print(
                    f"{seed:>4} {format_budget(budget):>5} {method:>11} {curve.best[-1]:>7.4f} {target:>7.4f} "
                    f"{curve.epochs[-1]:>6} {'-' if hit is None else hit[0]:>6} "
                    f"{'-' if hit is None else f'{hit[1]:.0f}':>8} {'-' if paired is None else paired[0]:>7} "
                    f"{'-' if matched is None else matched[0]:>7}"
                )
            for k, name in enumerate(ratios):
                alone_hit, warm_hit = hits["independent"][k], hits["ladder"][k]
                if warm_hit is None:
                    misses.append(f"seed {seed} {format_budget(budget)}: the ladder never came within {name}")
                else:
                    ratios[name][budget].append(alone_hit[0] / warm_hit[0])
            if warm.best[-1] > target:
                misses.append(f"seed {seed} {format_budget(budget)}: the ladder's final best is worse by over 1 SE")
            constant = "-" if alone.constant is None else f"{alone.constant:.4f}"
            print(
                f"{'':>4} {'':>5} {'sources':>11} {', '.join(warm.sources) or '-'}  "
                f"(SE {alone.se:.4f}; constant predictor {constant})"
            )
    for name, per_rung in ratios.items():
        for budget, values in per_rung.items():
            if values:
                shown = ", ".join(f"{v:.2f}" for v in values)
                print(
                    f"{format_budget(budget)}: epochs to {name}, independent / ladder: "
                    f"median {statistics.median(values):.2f}x ({shown})"
                )
    for miss in misses:
        print(miss)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="10 trials of 2-3 epochs, one seed")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--target", choices=("threshold", "volatility"), default="threshold")
    args = parser.parse_args()
    main(args.smoke, 1 if args.smoke else args.seeds, args.target)
