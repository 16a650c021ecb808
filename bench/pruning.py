"""Search compute saved by pruning: the same study (budget, trials, seed) with hpod's default
Hyperband pruner and with none (the replaced system's way: every trial to early stopping),
counting epochs trained and the wall time and epochs spent until the study's final best trial.

    python bench/pruning.py [--smoke]
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna

from hpod.job import SearchSpec, TrainSpec, load_job
from hpod.study.objective import Objective
from hpod.study.plan import best_trial, open_study, plan_study
from hpod.supervisor.trials import run_study
from hpod.trial.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
BUDGET, HORIZON = 100_000, 5
# The default job's schedule (architectural_search.yaml): on the bundled data an epoch is 45
# optimizer steps at any budget, so warm-up (100-500 steps = 2-11 epochs), patience (10 epochs) and
# epochs (50/75/100) stand in the same proportion to an epoch as in production; only the grid is
# tiny.yaml's, so a trial takes seconds an epoch instead of minutes.
DEFAULT = SearchSpec()
EPOCHS, PATIENCE, WARMUP = DEFAULT.epochs, TrainSpec().patience, DEFAULT.warmup_steps


@dataclasses.dataclass
class Run:
    best: float
    epochs: int  # trained in the whole study
    seconds: float
    epochs_to_best: int  # trained until the trial that ended with the final best finished
    seconds_to_best: float


def run(pruner: str, seed: int, trials: int, epochs: tuple[int, ...]) -> Run:
    job = load_job(ROOT / "jobs" / "tiny.yaml")
    search = dataclasses.replace(
        job.search, pruner=pruner, seed=seed, n_trials=trials, epochs=epochs, warmup_steps=WARMUP, final_seeds=0
    )
    job = dataclasses.replace(job, search=search, train=dataclasses.replace(job.train, patience=PATIENCE))
    plan = plan_study(job, BUDGET, HORIZON)
    dataset = load_dataset(job.data, HORIZON)
    study = open_study(plan, optuna.storages.InMemoryStorage())
    finished_at: dict[int, tuple[float, int]] = {}
    start, epochs = time.perf_counter(), 0

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal epochs
        epochs += trial.user_attrs.get("epochs_run", 0)
        finished_at[trial.number] = (time.perf_counter() - start, epochs)

    run_study(study, Objective(plan, dataset, study.sampler), trials, [on_trial])
    best = best_trial(study)
    seconds_to_best, epochs_to_best = finished_at[best.number]
    return Run(best.value, epochs, time.perf_counter() - start, epochs_to_best, seconds_to_best)


def run_one(case: tuple[str, int, int, tuple[int, ...]]) -> Run:
    """One study in a process of its own, on one core, so that studies run side by side on the
    machine's cores without competing for each other's threads."""
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return run(*case)


def main(smoke: bool) -> None:
    trials, seeds, epochs = (4, 1, (2, 3)) if smoke else (24, 3, EPOCHS)
    print(
        f"budget {BUDGET:,}, h{HORIZON}, jobs/tiny.yaml's grid with epochs {'/'.join(map(str, epochs))}, patience "
        f"{PATIENCE}, warm-up {WARMUP[0]}-{WARMUP[1]} steps, {trials} trials x {seeds} seeds, "
        f"each study in its own process on one core, {os.cpu_count()} at a time"
    )
    print(f"{'seed':>4} {'pruner':>9} {'best':>7} {'epochs':>6} {'to best':>7} {'wall s':>7} {'to best s':>9}")
    cases = [(pruner, seed, trials, epochs) for seed in range(seeds) for pruner in ("hyperband", "none")]
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        results = dict(zip(((c[0], c[1]) for c in cases), pool.map(run_one, cases), strict=True))
    ratios, diffs, time_ratios = [], [], []
    for seed in range(seeds):
        for pruner in ("hyperband", "none"):
            r = results[pruner, seed]
            print(
                f"{seed:>4} {pruner:>9} {r.best:>7.4f} {r.epochs:>6} {r.epochs_to_best:>7} "
                f"{r.seconds:>7.1f} {r.seconds_to_best:>9.1f}"
            )
        pruned, full = results["hyperband", seed], results["none", seed]
        ratios.append(full.epochs / pruned.epochs)
        time_ratios.append(full.seconds / pruned.seconds)
        diffs.append(pruned.best / full.best - 1)
    print(
        f"compute ratio (epochs, none / hyperband): mean {statistics.mean(ratios):.2f}x "
        f"(per seed {', '.join(f'{r:.2f}' for r in ratios)}); wall-time ratio {statistics.mean(time_ratios):.2f}x"
    )
    print(
        f"best-loss difference (hyperband vs none): mean {statistics.mean(diffs):+.2%} "
        f"(per seed {', '.join(f'{d:+.2%}' for d in diffs)})"
    )


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv)
