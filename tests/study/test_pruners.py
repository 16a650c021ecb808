"""Pruners: kept off each trial until its own warm-up is over, then Optuna's decide."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from hpod.records import WARMUP_EPOCHS
from hpod.study.pruners import make_pruner


def test_make_pruner_follows_the_job():
    assert isinstance(make_pruner("none", 10), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("median", 10).base, optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband", 10).base, optuna.pruners.HyperbandPruner)


@pytest.mark.parametrize("name", ["median", "hyperband"])
def test_no_trial_is_judged_before_its_own_warm_up_has_ended(name):
    """Warm-up of 500 steps at 45 an epoch ends in epoch 11 (0-based); one of 100 steps in epoch 2.
    The median pruner judges at once after it; Hyperband at the trial's next rung."""
    study = optuna.create_study(study_name="warm-up", pruner=make_pruner(name, 50))
    for _ in range(30):  # good trials that went the whole way, in each of Hyperband's brackets
        trial = study.ask()
        trial.set_user_attr(WARMUP_EPOCHS, 1)
        for step in range(50):
            trial.report(0.1, step)
            assert not trial.should_prune()  # Hyperband records a rung's values when asked
        study.tell(trial, 0.1)
    for warmup, earliest in ((math.ceil(500 / 45), 11), (math.ceil(100 / 45), 2)):
        bad = study.ask()
        bad.set_user_attr(WARMUP_EPOCHS, warmup)
        judged = next(step for step in range(50) if bad.report(10.0, step) or bad.should_prune())
        study.tell(bad, state=TrialState.PRUNED)
        assert judged == earliest if name == "median" else judged >= earliest
