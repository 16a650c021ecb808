"""Which trials stop early: Optuna's pruners, each kept off a trial until its warm-up is over.

A trial is judged on the best validation loss it has reached so far (the value the objective
returns), never before its own warm-up has ended: until then a long warm-up or a low learning
rate has shown nothing. Gating each trial by its own warm-up, rather than starting every
judgement after the longest warm-up of the search space, leaves short warm-ups prunable early.
"""

from __future__ import annotations

import optuna

from hpod.records import WARMUP_EPOCHS


class AfterWarmup(optuna.pruners.BasePruner):
    """Prunes nothing until the trial's warm-up is over, then asks `base`. Successive halving
    (and so Hyperband) catches up on the rungs it was not asked at, comparing this trial's best
    so far with the others' values at each rung: a late judgement can only favour the trial."""

    def __init__(self, base: optuna.pruners.BasePruner):
        self.base = base

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step  # the epoch just ended, 0-based
        if step is None or step + 1 < trial.user_attrs.get(WARMUP_EPOCHS, 0):
            return False
        return self.base.prune(study, trial)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return AfterWarmup(optuna.pruners.MedianPruner(n_startup_trials=5))
    return AfterWarmup(optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3))
