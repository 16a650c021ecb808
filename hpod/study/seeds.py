"""Seed runs: the search's best configuration retrained with fresh seeds once the search ends.

The best trial's val loss was chosen as the minimum of many noisy trials, so it is biased low,
and one run says nothing of seed variance. The seed runs live in a study of their own
(`STUDY-seeds-tN`, N the best trial), so they never feed the search's TPE nor count toward its
target, and they are resumable like any trial: each is a trial enqueued with the best's
parameters, run by the same objective with another training seed.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpod.records import SOURCE_TRIAL, WIDENED
from hpod.study.plan import FINISHED, StudyPlan, name_objective
from hpod.study.sampler import VariationSampler

SEED_OFFSET = 1_000_000  # training seed of seed run k: the job's seed + this + k, never a search trial's
SEEDS_OF = "seeds_of"  # user attr of a seed study: the search study it belongs to


def seed_study_name(study_name: str, best_number: int) -> str:
    return f"{seed_study_prefix(study_name)}{best_number}"


def seed_study_prefix(study_name: str) -> str:
    """What the names of a search study's seed studies begin with (one per best trial seeded)."""
    return f"{study_name}-seeds-t"


def open_seed_study(plan: StudyPlan, storage, best: FrozenTrial) -> optuna.Study:
    """The seed study of `best`, created with its metadata on first use, with a run waiting
    unless all `search.final_seeds` have finished or are running."""
    study = optuna.create_study(
        storage=storage,
        study_name=seed_study_name(plan.name, best.number),
        direction="minimize",
        load_if_exists=True,
        pruner=optuna.pruners.NopPruner(),  # a seed run is a measurement: it trains to early stopping
    )
    study.sampler = VariationSampler(optuna.samplers.RandomSampler(seed=plan.job.search.seed), plan.job.search)
    if not study.user_attrs:
        name_objective(study)
        search_attrs = optuna.load_study(study_name=plan.name, storage=storage).user_attrs
        study.set_user_attr(SEEDS_OF, plan.name)
        study.set_user_attr(SOURCE_TRIAL, best.number)
        if WIDENED in search_attrs:  # the best's values may lie in a range an import widened
            study.set_user_attr(WIDENED, search_attrs[WIDENED])
    top_up(study, best.params, plan.job.search.final_seeds)
    return study


def existing_seed_study(plan_name: str, storage, best: FrozenTrial | None) -> optuna.Study | None:
    """The seed study of `best` if one was started, for reading (the evaluation, the report)."""
    if best is None:
        return None
    try:
        return optuna.load_study(study_name=seed_study_name(plan_name, best.number), storage=storage)
    except KeyError:
        return None


def top_up(study: optuna.Study, params: dict, count: int) -> None:
    """Enqueue copies of `params` until the runs finished, running and waiting are `count`: a
    failed seed run is replaced, never by a freshly sampled trial. Fits an Optuna callback's
    place (`lambda study, trial: top_up(study, params, count)`)."""
    trials = study.get_trials(deepcopy=False)
    live = sum(t.state in (*FINISHED, TrialState.RUNNING, TrialState.WAITING) for t in trials)
    for _ in range(count - live):
        study.enqueue_trial(dict(params))
