"""The budget ladder's transfer, with real studies: a new budget's first trials after the
extremes are the smaller budgets' best, mapped into its own grid and search space."""

import dataclasses
import math

import optuna
import pytest
from optuna.trial import TrialState

from hpod.records import FORCED_EXTREME, TRANSFER, TRANSFERRED_FROM
from hpod.study.objective import Objective
from hpod.study.plan import best_trial, distributions, open_study, plan_study
from hpod.study.transfer import fitted_lr
from hpod.supervisor.trials import run_study
from hpod.trial.data import load_dataset


def test_a_larger_budget_starts_from_the_smaller_ones_best_mapped_into_its_grid(fast_job, dataset_h5):
    fast_job = dataclasses.replace(fast_job, search=dataclasses.replace(fast_job.search, n_trials=9))  # room for all
    storage = optuna.storages.InMemoryStorage()
    small = plan_study(fast_job, 20_000, 5)
    lower = open_study(small, storage)
    run_study(lower, Objective(small, dataset_h5, lower.sampler), fast_job.search.forced_extremes + 3)
    large = plan_study(fast_job, 100_000, 5)
    study = open_study(large, storage)
    waiting = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    carried = [t for t in waiting if TRANSFERRED_FROM in t.user_attrs]
    assert all(FORCED_EXTREME in t.user_attrs for t in waiting[: len(waiting) - len(carried)])  # extremes first
    assert 1 <= len(carried) <= fast_job.search.transfer_trials
    grid = {e.arch.key for e in large.grid}
    best = min(lower.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.value)
    assert carried[0].user_attrs[TRANSFERRED_FROM] == f"{small.name}#{best.number}"
    fixed = carried[0].system_attrs["fixed_params"]  # what the enqueued trial will run
    assert fixed["arch"] in grid and fixed["dropout"] == best.params["dropout"]
    assert study.user_attrs[TRANSFER]["sources"] == [small.name] and study.user_attrs[TRANSFER]["lr_fit"] is None

    off = dataclasses.replace(fast_job, search=dataclasses.replace(fast_job.search, transfer=False))
    independent = open_study(dataclasses.replace(large, job=off), optuna.storages.InMemoryStorage())
    assert not any(TRANSFERRED_FROM in t.user_attrs for t in independent.get_trials())


def run_rung(job, budget: int, storage, trials: int) -> optuna.Study:
    plan = plan_study(job, budget, 5)
    study = open_study(plan, storage)
    run_study(study, Objective(plan, load_dataset(job.data, 5), study.sampler), trials)
    return study


def test_the_learning_rate_comes_from_a_power_law_once_two_rungs_exist(fast_job):
    storage = optuna.storages.InMemoryStorage()
    job = dataclasses.replace(fast_job, search=dataclasses.replace(fast_job.search, forced_extremes=False))
    bests = [best_trial(run_rung(job, budget, storage, 2)) for budget in (20_000, 50_000)]
    large = plan_study(job, 100_000, 5)
    study = open_study(large, storage)
    fit = study.user_attrs[TRANSFER]["lr_fit"]
    points = [[t.user_attrs["param_count"], t.params["learning_rate"]] for t in bests]
    assert sorted(fit["points"]) == sorted(points)
    (n0, lr0), (n1, lr1) = points
    assert fit["slope"] == pytest.approx(math.log(lr1 / lr0) / math.log(n1 / n0))
    counts = {e.arch.key: e.params for e in large.grid}
    low, high = job.search.learning_rate
    for trial in study.get_trials(states=(TrialState.WAITING,)):
        fixed = trial.system_attrs["fixed_params"]
        expected = min(max(fitted_lr(fit, counts[fixed["arch"]]), low), high)
        assert fixed["learning_rate"] == pytest.approx(expected)


def test_a_study_warm_started_from_poor_sources_still_finds_a_better_configuration(fast_job):
    """The rung below claims its best was a learning rate that wrecks training: the study tries
    it where a random startup trial would have gone, and its best is still one it found itself."""
    search = dataclasses.replace(fast_job.search, learning_rate=(1e-4, 3.0), forced_extremes=False, n_startup_trials=2)
    job = dataclasses.replace(fast_job, search=search)
    storage = optuna.storages.InMemoryStorage()
    small = plan_study(job, 20_000, 5)
    source = open_study(small, storage)
    space = distributions(search, [e.arch.key for e in small.grid])
    poor = {"arch": small.grid[0].arch.key, "learning_rate": 3.0, "weight_decay": 1e-4, "warmup_steps": 10}
    params = poor | {"epochs": 2, "dropout": 0.1}
    source.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=space,
            value=0.01,  # claimed far better than any real trial
            user_attrs={"param_count": small.grid[0].params},
        )
    )
    study = run_rung(job, 30_000, storage, 2)
    carried = [t for t in study.trials if TRANSFERRED_FROM in t.user_attrs]
    assert [t.user_attrs[TRANSFERRED_FROM] for t in carried] == [f"{small.name}#0"]
    assert carried[0].number == 0 and carried[0].params["learning_rate"] == 3.0  # tried first, as carried
    best = best_trial(study)
    assert best is not None and TRANSFERRED_FROM not in best.user_attrs
    assert carried[0].state != TrialState.COMPLETE or best.value < carried[0].value
