"""`hpod run`: one job's studies in this process, without the queue: each study's search, then
the seed runs of its best, then its evaluation, in the order the daemon runs them in workers."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

import optuna

from hpod.guard.policy import Guard
from hpod.guard.sensors import default_readers, read_all
from hpod.records import TrialLog
from hpod.results.evaluation import ensure_baselines, evaluate_study
from hpod.state import StateDir
from hpod.study.objective import Objective
from hpod.study.plan import StudyPlan, best_trial, open_study
from hpod.study.seeds import SEED_OFFSET, existing_seed_study, open_seed_study, top_up
from hpod.supervisor.trials import run_study
from hpod.trial.data import Dataset
from hpod.trial.probe import ChoiceCache
from hpod.trial.train import EpochRecord


class Progress(Protocol):
    """What the terminal shows while trials run (display.StudyProgress)."""

    def on_epoch(self, number: int, record: EpochRecord) -> None: ...

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None: ...


ProgressFactory = Callable[[optuna.Study, int], AbstractContextManager[Progress]]


class Foreground:
    def __init__(self, state: StateDir, storage, datasets: dict[int, Dataset], progress: ProgressFactory):
        self.state, self.storage, self.datasets, self.progress = state, storage, datasets, progress
        readers = default_readers()
        self.read = lambda: read_all(readers)

    def run(self, plan: StudyPlan) -> tuple[optuna.Study, dict | None]:
        """The plan's study to its target, its seed runs, its evaluation (None without a
        complete trial or its weights)."""
        dataset = self.datasets[plan.horizon]
        study = open_study(plan, self.storage)
        ensure_baselines(study, dataset)
        self.trials(plan, study, plan.job.search.n_trials)
        best, count = best_trial(study), plan.job.search.final_seeds
        if best is not None and count:
            seeds = open_seed_study(plan, self.storage, best)
            self.trials(plan, seeds, count, SEED_OFFSET, [lambda s, t: top_up(s, best.params, count)])
        seeds = existing_seed_study(plan.name, self.storage, best)
        return study, evaluate_study(plan, study, dataset, self.state.checkpoints, seeds)

    def trials(self, plan: StudyPlan, study: optuna.Study, target: int, seed_offset: int = 0, extra=()) -> None:
        with self.progress(study, target) as progress:
            objective = Objective(
                plan,
                self.datasets[plan.horizon],
                study.sampler,
                on_epoch=progress.on_epoch,
                checkpoints=self.state.checkpoints,
                guard=Guard(plan.job.guard, self.read),
                choices=ChoiceCache(self.state.micro_batches),
                seed_offset=seed_offset,
                tracebacks=self.state.tracebacks,
            )
            log_file = TrialLog(self.state.logs / f"{study.study_name}.log")
            run_study(study, objective, target, [log_file, progress.on_trial, *extra])
