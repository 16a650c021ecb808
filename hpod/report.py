"""`hpod report`: the best architecture and loss per budget × horizon, the scaling law fitted
to them, and the warnings a reader of the numbers needs (too few validation samples, studies
short of their target, best trials at the edge of the search space)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpod.budget import format_budget
from hpod.data import data_shape
from hpod.evaluation import TEST_ATTR
from hpod.grid import build_grid
from hpod.job import parse_job
from hpod.scaling import PARAMETERS, Bootstrap, Fit, bootstrap, fit_law
from hpod.search import best_trial

SETTINGS = ("learning_rate", "weight_decay", "warmup_steps", "dropout", "epochs")


@dataclass
class Cell:
    """One study: a (job, budget, horizon)."""

    job: str
    budget: int
    horizon: int
    study: str
    target: int  # finished trials the study was to have
    counts: dict[str, int]  # complete, pruned, failed, running
    best: dict | None  # the best trial: number, val loss, architecture, settings, samples
    test: dict | None  # its test-split evaluation, when the study ended
    warnings: list[str] = field(default_factory=list)
    trials: list[tuple[int, float, int, int]] = field(default_factory=list)  # complete: params, loss, d_model, layers

    @property
    def finished(self) -> int:
        return self.counts["complete"] + self.counts["pruned"]


def cells(storage: optuna.storages.BaseStorage, job: str | None = None) -> list[Cell]:
    """Every hpod study in the storage (those with budget and horizon), optionally of one job."""
    found = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        attrs = study.user_attrs
        if "budget" not in attrs or "horizon" not in attrs or (job is not None and attrs.get("job_name") != job):
            continue
        found.append(cell(study))
    return sorted(found, key=lambda c: (c.job, c.horizon, c.budget))


def cell(study: optuna.Study) -> Cell:
    attrs = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    counts = {
        state.name.lower(): sum(t.state == state for t in trials)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    }
    counts["failed"] = counts.pop("fail")
    best = best_trial(study)
    test = attrs.get(TEST_ATTR)
    result = Cell(
        job=attrs.get("job_name", study.study_name),
        budget=attrs["budget"],
        horizon=attrs["horizon"],
        study=study.study_name,
        target=attrs.get("n_trials", 0),
        counts=counts,
        best=None if best is None else best_record(best),
        test=test if test is not None and best is not None and test["trial"] == best.number else None,
        trials=[
            (t.user_attrs["param_count"], t.value, t.user_attrs["d_model"], t.user_attrs["n_layers"])
            for t in trials
            if t.state == TrialState.COMPLETE and t.user_attrs.get("param_count") is not None
        ],
    )
    result.warnings = warnings(result, attrs.get("job_text", ""))
    return result


def best_record(trial: FrozenTrial) -> dict:
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "val_loss": trial.value,
        "arch": trial.params.get("arch"),
        **{k: attrs.get(k) for k in ("d_model", "n_layers", "n_heads", "d_ff", "param_count")},
        **{k: trial.params.get(k) for k in SETTINGS},
        "epochs_run": attrs.get("epochs_run"),
        "micro_batch": attrs.get("micro_batch"),
        "n_val": attrs.get("n_val"),
        "val_auc": attrs.get("val_auc"),
    }


def warnings(c: Cell, job_text: str) -> list[str]:
    """What makes this cell's numbers weaker than they look."""
    found = []
    name = f"{format_budget(c.budget)} h{c.horizon}"
    if c.finished < c.target:
        found.append(f"{name}: {c.finished} of {c.target} trials finished; the search is incomplete")
    if c.best is None:
        return [*found, f"{name}: no complete trial"]
    job = parse_job(job_text, source=c.study)
    n_val = c.best["n_val"]
    if n_val is None:
        found.append(f"{name}: the best trial does not record its validation samples (imported?)")
    elif n_val < job.data.min_val_samples:
        found.append(f"{name}: the best loss rests on {n_val} validation samples (< {job.data.min_val_samples})")
    grid = build_grid(job.grid, data_shape(job.data), c.budget)
    for dim in ("d_model", "n_layers"):
        values = sorted({getattr(e.arch, dim) for e in grid})
        value = c.best[dim]
        if len(values) > 1 and value in (values[0], values[-1]):
            edge = "smallest" if value == values[0] else "largest"
            found.append(
                f"{name}: the best trial's {dim}={value} is the grid's {edge}; the search space may be too narrow"
            )
    return found


@dataclass(frozen=True)
class LawReport:
    """The fit of one (job, horizon) over its budgets, or why there is none."""

    job: str
    horizon: int
    budgets: int
    fit: Fit | None
    interval: Bootstrap | None
    note: str | None  # no fit possible, or no degrees of freedom left

    def as_json(self) -> dict:
        out = {"job": self.job, "horizon": self.horizon, "budgets": self.budgets, "note": self.note}
        if self.fit is not None:
            out["fit"] = asdict(self.fit)
        if self.interval is not None:
            out["bootstrap"] = {
                "resamples": self.interval.resamples,
                "alpha_95": [self.interval.alpha.low, self.interval.alpha.high],
                "E_95": [self.interval.E.low, self.interval.E.high],
            }
        return out


def laws(all_cells: list[Cell], resamples: int = 200) -> list[LawReport]:
    """One fit per job and horizon, over the budgets with a complete trial."""
    reports = []
    for job, horizon in sorted({(c.job, c.horizon) for c in all_cells}):
        group = [c for c in all_cells if c.job == job and c.horizon == horizon and c.best is not None]
        reports.append(law(job, horizon, group, resamples))
    return reports


def law(job: str, horizon: int, group: list[Cell], resamples: int) -> LawReport:
    if len(group) < PARAMETERS:
        note = f"no fit: {len(group)} budget(s) with a complete trial; L = E + A·N^-α needs at least {PARAMETERS}"
        return LawReport(job, horizon, len(group), None, None, note)
    n = np.array([c.best["param_count"] for c in group], dtype=float)
    losses = np.array([c.best["val_loss"] for c in group])
    fit = fit_law(n, losses)
    interval = (
        bootstrap([[(p, loss) for p, loss, *_ in c.trials] for c in group], fit, resamples) if resamples else None
    )
    note = None
    if len(group) == PARAMETERS:
        note = f"{PARAMETERS} budgets for {PARAMETERS} parameters: the fit has no degrees of freedom left"
    if not fit.converged:
        note = "; ".join(filter(None, [note, "the optimiser did not report convergence"]))
    return LawReport(job, horizon, len(group), fit, interval, note)


def as_json(all_cells: list[Cell], reports: list[LawReport]) -> dict:
    return {
        "cells": [{k: v for k, v in asdict(c).items() if k != "trials"} for c in all_cells],
        "fits": [r.as_json() for r in reports],
        "warnings": [w for c in all_cells for w in c.warnings],
    }


def describe(report: LawReport) -> str:
    """One line per fit, for the terminal."""
    head = f"{report.job} h{report.horizon}:"
    if report.fit is None:
        return f"{head} {report.note}"
    f, ci = report.fit, report.interval
    alpha = f"α = {f.alpha:.3f}" + (f" [{ci.alpha.low:.3f}, {ci.alpha.high:.3f}]" if ci else "")
    e = f"E = {f.E:.4f}" + (f" [{ci.E.low:.4f}, {ci.E.high:.4f}]" if ci else "")
    parts = [
        f"{head} L(N) = E + A·N^-α over {report.budgets} budgets: {alpha}, {e}, A = {f.A:.4g}",
        f"(95% bootstrap, {ci.resamples} resamples)" if ci else "",
        f"converged from {f.agreeing_starts}/{f.starts} starts",
    ]
    line = " ".join(p for p in parts if p)
    return line + (f"; {report.note}" if report.note else "")
