"""The budget ladder's transfer: a new study's first trials after the forced extremes are the best
configurations of the same job's smaller budgets (same horizon, data and target), so that its
startup trials look where the rungs below found good settings instead of at random.

Transfer chooses only where to look first: the search space is the study's own, every
transferred value is mapped or clipped into it, and the trials after them are sampled as in any
study. An architecture is carried as its shape (aspect ratio d_model / n_layers, heads, d_ff
multiple) to the nearest architecture of this budget's grid; the learning rate, once two rungs
exist, comes from a power law in the parameter count fitted to the rungs' best learning rates
(μP-style transfer of the optimum across widths and depths); the other settings are carried as
they were.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from hpod.job import DataSpec
from hpod.records import TRANSFER, TRANSFERRED_FROM
from hpod.trial.data import checksum, data_file
from hpod.trial.grid import Arch, GridEntry

if TYPE_CHECKING:
    from hpod.study.plan import StudyPlan

DATA_KEY = "data_key"  # study attr: the data file's checksum and the target it is read with


@dataclass(frozen=True)
class Rung:
    """A finished smaller budget of the same ladder: its study and complete trials, best first."""

    study_name: str
    budget: int
    trials: list[FrozenTrial]

    @property
    def best(self) -> FrozenTrial:
        return self.trials[0]


def data_key(data: DataSpec) -> str:
    """What must match for a smaller budget's results to say anything here: the data's bytes and
    how its samples and target are read from them (everything of `data` but the file's name)."""
    text = f"{checksum(data_file(data))}:{replace(data, path=None)!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rungs_below(storage, plan: StudyPlan, key: str) -> list[Rung]:
    """The same job's studies of smaller budgets on this storage with a complete trial, nearest
    budget first."""
    job_name, horizon, budget = plan.job.name, plan.horizon, plan.budget
    found = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        if (attrs.get("job_name"), attrs.get("horizon"), attrs.get(DATA_KEY)) != (job_name, horizon, key):
            continue
        if not attrs.get("budget", budget) < budget:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value)
        if complete:
            found.append(Rung(summary.study_name, attrs["budget"], complete))
    return sorted(found, key=lambda r: -r.budget)


def nearest_arch(source: Arch, grid: list[GridEntry], budget: int) -> Arch:
    """The grid's architecture of the nearest shape: aspect ratio first (log scale), then heads,
    then d_ff multiple, then the parameter count nearest the budget."""

    def distance(entry: GridEntry) -> tuple[float, float, float, float]:
        arch = entry.arch
        aspect = abs(math.log(arch.d_model / arch.n_layers) - math.log(source.d_model / source.n_layers))
        heads = abs(math.log2(arch.n_heads / source.n_heads))
        ff = abs(math.log2((arch.d_ff / arch.d_model) / (source.d_ff / source.d_model)))
        return round(aspect, 6), heads, ff, abs(math.log(entry.params / budget))

    return min(grid, key=distance).arch


def lr_fit(rungs: list[Rung]) -> dict | None:
    """log lr = intercept + slope · log N over the rungs' best trials; None below two rungs."""
    points = [(r.best.user_attrs["param_count"], r.best.params["learning_rate"]) for r in rungs]
    if len({n for n, _ in points}) < 2:
        return None
    slope, intercept = np.polyfit(np.log([n for n, _ in points]), np.log([lr for _, lr in points]), 1)
    return {"slope": float(slope), "intercept": float(intercept), "points": [[n, lr] for n, lr in points]}


def fitted_lr(fit: dict, params: int) -> float:
    return math.exp(fit["intercept"] + fit["slope"] * math.log(params))


def into(dist, value):
    """The value moved into the distribution: clipped, rounded to its step, or the nearest choice."""
    if isinstance(dist, CategoricalDistribution):
        return min(dist.choices, key=lambda c: abs(c - value))
    clipped = min(max(value, dist.low), dist.high)
    if isinstance(dist, IntDistribution):
        return int(dist.low + round((clipped - dist.low) / dist.step) * dist.step)
    assert isinstance(dist, FloatDistribution)
    return float(clipped)


def transferred_params(trial: FrozenTrial, space: dict, grid: list[GridEntry], budget: int, fit: dict | None) -> dict:
    """A smaller budget's trial as a starting point in this study's space."""
    arch = nearest_arch(Arch.from_key(trial.params["arch"]), grid, budget)
    params = {name: into(space[name], trial.params[name]) for name in space if name != "arch" and name in trial.params}
    if fit is not None:
        count = next(e.params for e in grid if e.arch == arch)
        params["learning_rate"] = into(space["learning_rate"], fitted_lr(fit, count))
    return {"arch": arch.key, **params}


def enqueue_transfer(study: optuna.Study, rungs: list[Rung], space: dict, grid: list[GridEntry], budget: int, k: int):
    """Enqueue up to k configurations from the rungs below (the nearest rung's best first, then
    the next rung's) and record on the study what they came from and the learning-rate fit."""
    fit = lr_fit(rungs)
    chosen: list[tuple[dict, str]] = []
    for rung in rungs:
        for trial in rung.trials:
            params = transferred_params(trial, space, grid, budget, fit)
            shape = (params["arch"], params.get("learning_rate"))
            if len(chosen) < k and shape not in ((p["arch"], p.get("learning_rate")) for p, _ in chosen):
                chosen.append((params, f"{rung.study_name}#{trial.number}"))
    for params, source in chosen:
        study.enqueue_trial(params, user_attrs={TRANSFERRED_FROM: source})
    sources = sorted({s.split("#")[0] for _, s in chosen})
    study.set_user_attr(TRANSFER, {"sources": sources, "trials": [s for _, s in chosen], "lr_fit": fit})


def describe(transfer: dict | None, best: int | None, best_source: str | None) -> str | None:
    """What a warm-started study started from, and whether its best trial (number `best`) is a
    carried configuration or one its own search found; None for a study not warm-started."""
    if not transfer:
        return None
    fit = transfer["lr_fit"]
    lr = "" if fit is None else f"; learning rate ∝ N^{fit['slope']:.2f}, fitted over {len(fit['points'])} rungs"
    found = ""
    if best is not None:
        found = f"; best trial #{best} " + ("found by its own search" if best_source is None else f"is {best_source}'s")
    return f"warm-started from {', '.join(transfer['trials'])}{lr}{found}"
