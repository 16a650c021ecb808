"""Forced variation: a sampler wrapper that keeps TPE from re-sampling one architecture with
near-identical settings, and keeps trials off architectures that cannot fit in memory."""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial

from hpod.job import SearchSpec
from hpod.records import MEMORY_FAILED

log = logging.getLogger(__name__)


class VariationSampler(optuna.samplers.BaseSampler):
    """Wraps a sampler and forces variation: a trial with the previous trial's architecture,
    dropout within `variation_dropout_delta` and epochs within `variation_epochs_delta` gets
    dropout from the far end of `variation_dropout` instead. The replaced system's TPE kept
    re-sampling one architecture with near-identical settings.

    It also keeps trials off architectures that cannot fit in memory: those left out when the
    job was queued and those that failed at micro-batch 1 (study attr `memory_failed_archs`).
    The arch distribution keeps the whole grid, so a study shared with a bigger machine stays
    one search space."""

    def __init__(self, base: optuna.samplers.BaseSampler, spec: SearchSpec, excluded: frozenset[str] = frozenset()):
        self.base, self.spec, self.excluded = base, spec, excluded
        self.varied: dict[int, float] = {}  # trial number -> the dropout the base sampler chose

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        params = self.base.sample_relative(study, trial, search_space)
        if "arch" in params:
            params["arch"] = self._fitting(study, trial, params["arch"], search_space["arch"].choices)
        if {"arch", "epochs", "dropout"} <= params.keys():
            fixed = trial.system_attrs.get("fixed_params", {})
            arch, epochs = fixed.get("arch", params["arch"]), fixed.get("epochs", params["epochs"])
            params["dropout"] = self._vary(study, trial, arch, epochs, params["dropout"])
        return params

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self.base.sample_independent(study, trial, param_name, param_distribution)
        if param_name == "arch":
            value = self._fitting(study, trial, value, param_distribution.choices)
        if param_name == "dropout" and {"arch", "epochs"} <= trial.params.keys():
            value = self._vary(study, trial, trial.params["arch"], trial.params["epochs"], value)
        return value

    def before_trial(self, study, trial):
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def _fitting(self, study, trial: FrozenTrial, arch: str, choices: Sequence[str]) -> str:
        """The sampled architecture, or, if it cannot fit in memory, one drawn among those that can."""
        # Hyperband hands samplers a per-bracket view without user_attrs; the storage has them.
        attrs = study._storage.get_study_user_attrs(study._study_id)
        excluded = self.excluded | set(attrs.get(MEMORY_FAILED, ()))
        allowed = [c for c in choices if c not in excluded]
        if arch not in excluded or not allowed:
            return arch
        pick = random.Random(zlib.crc32(f"{study.study_name}:{trial.number}".encode())).choice(allowed)
        log.info("trial %d: %s does not fit in memory; %s instead", trial.number, arch, pick)
        return pick

    def _vary(self, study, trial: FrozenTrial, arch: str, epochs: int, dropout: float) -> float:
        previous = previous_trial(study, trial.number)
        if previous is None or previous.params["arch"] != arch:
            return dropout
        last_dropout = previous.params["dropout"]
        if (
            abs(dropout - last_dropout) >= self.spec.variation_dropout_delta
            or abs(epochs - previous.params["epochs"]) >= self.spec.variation_epochs_delta
        ):
            return dropout
        low, high = self.spec.variation_dropout
        forced = high if last_dropout < (low + high) / 2 else low
        self.varied[trial.number] = dropout
        log.info(
            "trial %d repeats trial %d's %s: dropout %.3f -> %.2f", trial.number, previous.number, arch, dropout, forced
        )
        return forced


def previous_trial(study: optuna.Study, number: int) -> FrozenTrial | None:
    """The latest trial before `number` that sampled an architecture and a dropout."""
    earlier = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number < number and {"arch", "dropout", "epochs"} <= t.params.keys()
    ]
    return max(earlier, key=lambda t: t.number, default=None)
