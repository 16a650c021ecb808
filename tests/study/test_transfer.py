"""The budget ladder's transfer, with real studies: a new budget's first trials after the
extremes are the smaller budgets' best, mapped into its own grid and search space."""

import dataclasses

import optuna

from hpod.records import FORCED_EXTREME, TRANSFER, TRANSFERRED_FROM
from hpod.study.objective import Objective
from hpod.study.plan import open_study, plan_study
from hpod.supervisor.trials import run_study


def test_a_larger_budget_starts_from_the_smaller_ones_best_mapped_into_its_grid(fast_job, dataset_h5):
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
