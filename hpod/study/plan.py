"""The plan of one (job, budget, horizon) study, its search space, and opening it.

The architecture is sampled by key from the budget's grid; the first trials are forced to the
grid's extremes, then to the smaller budgets' best (`transfer.py`; see `sampler.py` for forced
variation, `pruners.py` for pruning). One function,
`open_study`, opens a plan's study for the daemon, the worker, `hpod run` and `hpod import` alike.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, Trial, TrialState

from hpod.errors import HpodError
from hpod.job import JobSpec, SearchSpec
from hpod.records import FORCED_EXTREME, N_TRIALS
from hpod.state import StateDir
from hpod.storage import open_storage
from hpod.study.budget import format_budget
from hpod.study.pruners import make_pruner
from hpod.study.sampler import VariationSampler
from hpod.study.transfer import DATA_KEY, data_key, enqueue_transfer, rungs_below
from hpod.trial.data import data_shape
from hpod.trial.grid import GridEntry, extremes, require_grid

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
METRIC = "val_loss"  # the objective's name for optuna-dashboard (a pruned trial's: its best epoch's)


@dataclass(frozen=True)
class StudyPlan:
    job: JobSpec
    budget: int
    horizon: int
    grid: list[GridEntry]
    excluded: frozenset[str] = frozenset()  # keys too big for the memory limit when queued

    @property
    def name(self) -> str:
        return f"{self.job.name}-{format_budget(self.budget)}-h{self.horizon}"

    @property
    def max_epochs(self) -> int:
        planned = max(self.job.search.epochs)
        cap = self.job.train.max_epochs
        return planned if cap is None else min(planned, cap)


def plan_study(job: JobSpec, budget: int, horizon: int) -> StudyPlan:
    """Everything a study needs that is known without data; errors if the grid is empty."""
    return StudyPlan(job, budget, horizon, require_grid(job.grid, data_shape(job.data), budget))


def distributions(
    search: SearchSpec, arch_keys: Sequence[str], widened: dict | None = None
) -> dict[str, BaseDistribution]:
    """The search space, in the order the objective samples it (arch and epochs before dropout),
    with ranges that imports widened (study user attr `widened`) in place of the job's."""
    warmup_low, warmup_high, warmup_step = search.warmup_steps
    space = {
        "arch": CategoricalDistribution(tuple(arch_keys)),
        "learning_rate": FloatDistribution(*search.learning_rate, log=True),
        "weight_decay": FloatDistribution(*search.weight_decay, log=True),
        "warmup_steps": IntDistribution(warmup_low, warmup_high, step=warmup_step),
        "epochs": CategoricalDistribution(search.epochs),
        "dropout": FloatDistribution(*search.dropout),
    }
    for name, fields in (widened or {}).items():
        space[name] = type(space[name])(**fields)
    return space


def suggest(trial: Trial, name: str, dist: BaseDistribution):
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def open_study(plan: StudyPlan, storage: str | optuna.storages.BaseStorage, salt: str = "") -> optuna.Study:
    """Create the study or load it; a new one gets its metadata and forced extreme trials.

    The sampler is seeded from the study, the job's seed and the number of trials already
    started, so a process that reopens the study (each trial's worker does) does not replay
    earlier draws, and studies of different budgets do not share theirs; workers that start
    trials at once, on one host or several, pass distinct salts so as not to draw alike."""
    study = optuna.create_study(
        storage=storage,
        study_name=plan.name,
        direction="minimize",
        load_if_exists=True,
        pruner=make_pruner(plan.job.search.pruner, plan.max_epochs),
    )
    trials = study.get_trials(deepcopy=False)
    search = plan.job.search
    started = sum(t.state != TrialState.WAITING for t in trials)
    seed = zlib.crc32(f"{plan.name}:{search.seed}:{started}{salt}".encode())
    tpe = optuna.samplers.TPESampler(n_startup_trials=search.n_startup_trials, seed=seed)
    study.sampler = VariationSampler(tpe, search, plan.excluded)
    if not trials and not study.user_attrs:
        for key, value in study_attrs(plan).items():
            study.set_user_attr(key, value)
        name_objective(study)
        fitting = [e for e in plan.grid if e.arch.key not in plan.excluded]
        forced = extremes(fitting)[: search.n_trials] if search.forced_extremes else []  # none left unrun
        for arch in forced:
            study.enqueue_trial({"arch": arch.key}, user_attrs={FORCED_EXTREME: True})
        carried = min(search.transfer_trials, search.n_trials - len(forced))
        key = study.user_attrs[DATA_KEY]
        if search.transfer and carried > 0 and (rungs := rungs_below(storage, plan, key)):
            space = distributions(search, [e.arch.key for e in fitting])
            enqueue_transfer(study, rungs, space, fitting, plan.budget, carried)
    elif study.user_attrs.get(N_TRIALS) != search.n_trials:  # re-enqueued with another --trials:
        study.set_user_attr(N_TRIALS, search.n_trials)  # the report judges against the target worked to
    return study


def name_objective(study: optuna.Study) -> None:
    """The objective's name for optuna-dashboard ("Objective 0" otherwise); Optuna marks the call
    experimental, a warning every new study would print into the daemon's log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC])


def study_attrs(plan: StudyPlan) -> dict:
    return {
        "budget": plan.budget,
        "horizon": plan.horizon,
        "job_name": plan.job.name,
        "job_text": plan.job.text,
        N_TRIALS: plan.job.search.n_trials,
        "grid_size": len(plan.grid),
        DATA_KEY: data_key(plan.job.data),  # which smaller budgets it may learn from (transfer.py)
    }


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None while there is none (Optuna raises instead)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=lambda t: t.value, default=None)


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward a job's target: complete and pruned ones."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def load_named_study(name: str, state: StateDir, storage: str | None) -> optuna.Study:
    """An existing study by name (for show and export); an error names the studies there are."""
    if storage is None and not state.optuna_db.exists():
        raise HpodError(f"no studies yet in {state.root}")
    store = open_storage(state.storage_url(storage), create=False)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage=store, include_best_trial=False)]
    if name not in names:
        raise HpodError(f"no study named {name!r} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=store)
