"""`hpod report`: per budget × horizon the searched model beside its baselines on the same split,
as skill with a standard error (`skill.py`), the scaling law fitted to the budgets' test losses
with a verdict (`scaling.py`), and the warnings a reader of the numbers needs.

Horizons are compared through skill, never through raw loss. Each cell's loss is the mean of its
seed runs (else its best trial's, chosen on val and so biased low); standard errors come from a
moving-block bootstrap of the evaluation samples, drawn once per job and horizon and shared by
its budgets, and of the seeds (`resample.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpod.job import JobSpec, parse_job
from hpod.records import (
    BASELINES,
    EPOCHS_RUN,
    MICRO_BATCH,
    PARAMS,
    TEST_EVALUATION,
    TRANSFER,
    TRANSFERRED_FROM,
    VAL_AUC,
)
from hpod.results.evaluation import read_samples, samples_path
from hpod.results.resample import block_counts
from hpod.results.scaling import PARAMETERS, Fit, LawInterval, fit_law, law_interval, verdict
from hpod.results.skill import SPLITS, beats, falls_short, split_skill
from hpod.study.budget import format_budget
from hpod.study.plan import best_trial
from hpod.study.transfer import describe as describe_transfer
from hpod.trial.data import data_shape
from hpod.trial.grid import build_grid


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
    test: dict | None  # its evaluation (test loss, seed runs), when the study ended
    baselines: dict | None  # name -> {val_loss, test_loss}
    spec: JobSpec = field(repr=False)
    skill: dict = field(default_factory=dict)  # split -> loss, baselines, skill, each with SE
    warnings: list[str] = field(default_factory=list)
    transfer: dict | None = None  # the budget ladder's warm start (study/transfer.py), if it had one
    trials: list[tuple[int, float, int, int]] = field(default_factory=list)  # complete: params, loss, d_model, layers
    samples: dict | None = field(default=None, repr=False)  # per-sample losses (evaluation.write_samples)
    replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # split -> loss draws

    @property
    def finished(self) -> int:
        return self.counts["complete"] + self.counts["pruned"]

    @property
    def name(self) -> str:
        return f"{format_budget(self.budget)} h{self.horizon}"

    @property
    def val_loss(self) -> float | None:
        """The seed runs' mean val loss when measured, else the best trial's."""
        return self.loss("val")

    def loss(self, split: str) -> float | None:
        """The seed runs' mean loss on the split when measured, else the best trial's."""
        if split in self.skill:
            return self.skill[split]["loss"]
        if split == "test":
            return None if self.test is None else self.test["test_loss"]
        return None if self.best is None else self.best["val_loss"]

    def as_json(self) -> dict:
        """What `--json` shows: the cell without its arrays and job spec (nor copies of them)."""
        hidden = ("trials", "samples", "replicates", "spec")
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}
        return shown | {"train_labels_per_parameter": labels_per_parameter(self)}


def cells(
    storage: optuna.storages.BaseStorage, checkpoints: Path | None = None, job: str | None = None, resamples: int = 200
) -> list[Cell]:
    """Every hpod study in the storage (those with budget and horizon), optionally of one job,
    with skill measured where the per-sample losses are in `checkpoints`."""
    found = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        attrs = study.user_attrs
        if "budget" not in attrs or "horizon" not in attrs or (job is not None and attrs.get("job_name") != job):
            continue
        found.append(cell(study, checkpoints))
    found.sort(key=lambda c: (c.job, c.horizon, c.budget))
    for group in groups(found).values():
        measure(group, resamples)
    for c in found:
        c.warnings = warnings(c)
    return found


def cell(study: optuna.Study, checkpoints: Path | None) -> Cell:
    attrs = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    counts = {
        state.name.lower(): sum(t.state == state for t in trials)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    }
    counts["failed"] = counts.pop("fail")
    best = best_trial(study)
    test = attrs.get(TEST_EVALUATION)
    current = test is not None and best is not None and test["trial"] == best.number
    return Cell(
        job=attrs.get("job_name", study.study_name),
        budget=attrs["budget"],
        horizon=attrs["horizon"],
        study=study.study_name,
        target=attrs.get("n_trials", 0),
        counts=counts,
        best=None if best is None else best_record(best),
        test=test if current else None,
        baselines=attrs.get(BASELINES),
        transfer=attrs.get(TRANSFER),
        spec=parse_job(attrs.get("job_text", ""), source=study.study_name),
        trials=[
            (t.user_attrs["param_count"], t.value, t.user_attrs["d_model"], t.user_attrs["n_layers"])
            for t in trials
            if t.state == TrialState.COMPLETE and t.user_attrs.get("param_count") is not None
        ],
        samples=read_samples(samples_path(checkpoints, study.study_name)) if current and checkpoints else None,
    )


def best_record(trial: FrozenTrial) -> dict:
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "val_loss": trial.value,
        "arch": trial.params.get("arch"),
        **{k: attrs.get(k) for k in ("d_model", "n_layers", "n_heads", "d_ff", "param_count")},
        **{k: trial.params.get(k) for k in PARAMS},
        "epochs_run": attrs.get(EPOCHS_RUN),
        "micro_batch": attrs.get(MICRO_BATCH),
        "n_train": attrs.get("n_train"),
        "n_val": attrs.get("n_val"),
        "val_auc": attrs.get(VAL_AUC),
        "transferred_from": attrs.get(TRANSFERRED_FROM),
    }


def groups(all_cells: list[Cell]) -> dict[tuple[str, int], list[Cell]]:
    """The cells of each (job, horizon): one split, one scaling fit."""
    out: dict[tuple[str, int], list[Cell]] = {}
    for c in all_cells:
        out.setdefault((c.job, c.horizon), []).append(c)
    return out


def measure(group: list[Cell], resamples: int, seed: int = 0) -> None:
    """Each measured cell's losses, baselines and skill with SEs, from one draw of blocks per
    split shared by the group (its cells were evaluated on the same samples)."""
    measured = [c for c in group if c.samples is not None]
    if not measured or resamples < 2:
        return
    rng = np.random.default_rng(seed)
    block = measured[0].spec.data.bootstrap_block
    draws = {}
    for split in SPLITS:
        sizes = {c.samples[f"model_{split}"].shape[1] for c in measured}
        if len(sizes) == 1:
            draws[split] = block_counts(sizes.pop(), block, resamples, rng)
    for c in measured:
        for split, counts in draws.items():
            c.skill[split], c.replicates[split] = split_skill(c.samples, split, counts, rng)


def has_skill(c: Cell) -> bool | None:
    """Whether the cell beats the constant predictor by more than 2 SE on val and on test
    (None: unmeasured): a model chosen on val can beat it there by selection alone."""
    judged = [beats(c.skill, "constant", split) for split in SPLITS]
    if all(j is None for j in judged):
        return None
    return not falls_short(c.skill, "constant")


def labels_per_parameter(c: Cell) -> float | None:
    """Train labels per parameter of the best model: one per window (its overlapping patches are
    views of the same rows, not data of their own)."""
    if c.best is None or c.best["n_train"] is None or not c.best["param_count"]:
        return None
    return c.best["n_train"] / c.best["param_count"]


def warm_start(c: Cell) -> str | None:
    """Which smaller budgets this cell's search started from, so a reader can weigh its best."""
    best = c.best or {}
    text = describe_transfer(c.transfer, best.get("trial"), best.get("transferred_from"))
    return None if text is None else f"{c.name}: {text}"


def warnings(c: Cell) -> list[str]:
    """What makes this cell's numbers weaker than they look."""
    found = []
    if c.finished < c.target:
        found.append(f"{c.name}: {c.finished} of {c.target} trials finished; the search is incomplete")
    if c.best is None:
        return [*found, f"{c.name}: no complete trial"]
    if has_skill(c) is False:
        splits = " and ".join(falls_short(c.skill, "constant"))
        found.append(f"{c.name}: no skill over the constant predictor on {splits} (within 2 SE)")
    elif short := falls_short(c.skill, "linear"):
        found.append(
            f"{c.name}: does not beat the linear baseline beyond 2 SE on {' and '.join(short)}; "
            "a logistic or ridge regression of the last row does as well"
        )
    if c.samples is None:
        found.append(f"{c.name}: no per-sample evaluation here; losses stand without baselines' SE or seed runs")
    elif len(c.samples["model_val"]) == 1:
        found.append(f"{c.name}: no seed runs; the loss is the best trial's, chosen on val and so biased low")
    labels = labels_per_parameter(c)
    if labels is not None and labels < 1:
        found.append(
            f"{c.name}: {labels:.3g} train labels per parameter; the model can memorise the train split, "
            "so a law here is one of over-parameterised models on a small series"
        )
    n_val = c.best["n_val"]
    if n_val is None:
        found.append(f"{c.name}: the best trial does not record its validation samples (imported?)")
    elif n_val < c.spec.data.min_val_samples:
        found.append(f"{c.name}: the best loss rests on {n_val} validation samples (< {c.spec.data.min_val_samples})")
    found.extend(edge_warnings(c))
    return found


def edge_warnings(c: Cell) -> list[str]:
    """A best trial at a bound of the job's own grid list, which the user could widen. At the edge
    of this budget's slice of the grid only, the next value does not fit the budget: nothing to
    widen, and no warning (it fired for nearly every cell)."""
    grid = build_grid(c.spec.grid, data_shape(c.spec.data), c.budget)
    found = []
    for dim in ("d_model", "n_layers"):
        listed = getattr(c.spec.grid, dim)
        value = c.best[dim]
        if len({getattr(e.arch, dim) for e in grid}) > 1 and value in (min(listed), max(listed)):
            edge = "smallest" if value == min(listed) else "largest"
            found.append(
                f"{c.name}: the best trial's {dim}={value} is the {edge} in grid.{dim}; widen it to search beyond"
            )
    return found


@dataclass(frozen=True)
class LawReport:
    """The fit of one (job, horizon) over its budgets, its verdict, or why there is none."""

    job: str
    horizon: int
    budgets: int
    fit: Fit | None
    interval: LawInterval | None
    verdict: str  # law | no scaling detected | underdetermined | no fit
    reason: str
    split: str = "test"  # the losses fitted: test, which no selection touched, else val
    beside: Fit | None = None  # the same fit on val, shown beside the test fit

    def as_json(self) -> dict:
        out = {
            "job": self.job,
            "horizon": self.horizon,
            "budgets": self.budgets,
            "verdict": self.verdict,
            "reason": self.reason,
            "split": self.split,
        }
        if self.fit is not None:
            out["fit"] = asdict(self.fit)
        if self.beside is not None:
            out["val_fit"] = asdict(self.beside)
        if self.interval is not None:
            i = self.interval
            out["bootstrap"] = {
                "resamples": i.resamples,
                "alpha_95": [i.alpha.low, i.alpha.high],
                "E_95": [i.E.low, i.E.high],
                "drop": i.drop,
                "drop_se": i.drop_se,
                "fall": i.fall,
                "fall_se": i.fall_se,
                "search_scatter": i.scatter,
                "lack_of_fit_p": i.lack_of_fit_p,
                "drop_one": {"budget": i.without[0], "alpha_low": i.without[1]},
            }
        return out


def laws(all_cells: list[Cell]) -> list[LawReport]:
    """One fit per job and horizon, over the budgets with a complete trial."""
    found = groups(all_cells).items()
    return [law(job, horizon, [c for c in group if c.best is not None]) for (job, horizon), group in found]


def fitted_split(group: list[Cell]) -> str:
    """Test when every budget's seed runs were evaluated on it: val chose each configuration and
    each run's best epoch, so a law on val carries that selection; else val, said as such."""
    return "test" if all("test" in c.replicates for c in group) else "val"


def search_scatter(group: list[Cell]) -> float:
    """How far a budget's loss could land from where it did had its search picked another
    configuration: the RMS gap between each budget's best trial and its seed runs' mean on val
    (0.001–0.004 on the bundled data), a scale of how much the pick, not the budget, moves a loss."""
    gaps = [c.best["val_loss"] - c.skill["val"]["loss"] for c in group if c.skill.get("val", {}).get("runs", 1) > 1]
    return float(np.sqrt(np.mean(np.square(gaps)))) if gaps else 0.0


def trend(n: np.ndarray, losses: np.ndarray, split: str) -> str:
    """Which way the losses go, for a fit whose noise is unknown (an imported table): a loss that
    rises with N is named so, not only "no per-sample losses"."""
    small, large = int(np.argmin(n)), int(np.argmax(n))
    way = "rises" if losses[large] > losses[small] else "falls"
    return f"the {split} loss {way} from {losses[small]:.4g} to {losses[large]:.4g} across the budgets"


def law(job: str, horizon: int, group: list[Cell]) -> LawReport:
    if len(group) < PARAMETERS:
        reason = f"{len(group)} budget(s) with a complete trial; L = E + A·N^-α needs at least {PARAMETERS}"
        return LawReport(job, horizon, len(group), None, None, "no fit", reason, split=fitted_split(group))
    split = fitted_split(group)
    n = np.array([c.best["param_count"] for c in group], dtype=float)
    losses = np.array([c.loss(split) for c in group])
    fit = fit_law(n, losses)
    measured = all(split in c.replicates for c in group)
    draws = np.stack([c.replicates[split] for c in group], axis=1) if measured else None
    interval = None if draws is None else law_interval(n, losses, draws, search_scatter(group))
    no_skill = [c.name for c in group if has_skill(c) is False]
    result, reason = verdict(len(group), fit, interval, no_skill)
    if all(falls_short(c.skill, "linear") for c in group):
        reason += "; no budget beats the linear baseline beyond 2 SE on both splits"
    if interval is None:
        reason += f"; {trend(n, losses, split)}"
    beside = fit_law(n, np.array([c.loss("val") for c in group])) if split == "test" else None
    return LawReport(job, horizon, len(group), fit, interval, result, reason, split, beside)


def as_json(all_cells: list[Cell], reports: list[LawReport]) -> dict:
    return {
        "cells": [c.as_json() for c in all_cells],
        "fits": [r.as_json() for r in reports],
        "warnings": [w for c in all_cells for w in c.warnings],
    }


def describe(report: LawReport) -> str:
    """One line per fit, for the terminal: the verdict first; α only beside its interval."""
    head = f"{report.job} h{report.horizon}: {report.verdict}"
    fitted = "the seed runs' test losses" if report.split == "test" else "val losses (no test evaluation)"
    if report.fit is None:
        return f"{head} ({report.reason})"
    if report.interval is None or report.verdict == "no scaling detected":
        return f"{head} ({report.reason}; fitted to {fitted})"
    f, ci = report.fit, report.interval
    beside = "" if report.beside is None else f"; on val α = {report.beside.alpha:.3f}"
    return (
        f"{head}: L(N) = E + A·N^-α over {report.budgets} budgets of {fitted}, α = {f.alpha:.3f} "
        f"[{ci.alpha.low:.3f}, {ci.alpha.high:.3f}], E = {f.E:.4f} [{ci.E.low:.4f}, {ci.E.high:.4f}] "
        f"(95% bootstrap of blocks and seeds, {ci.resamples} resamples){beside}; {report.reason}"
    )
