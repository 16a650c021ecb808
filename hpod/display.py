"""What hpod shows a person in the terminal: tables and live progress (rich)."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpod.records import trial_row
from hpod.results.report import Cell, has_skill
from hpod.study.budget import format_budget
from hpod.study.plan import FINISHED, best_trial
from hpod.trial.grid import GridEntry
from hpod.trial.train import EpochRecord


def grid_table(entries: list[GridEntry], budget: int) -> Table:
    table = Table(title=f"{len(entries)} architectures within the budget of {budget:,} parameters")
    for name in ("key", "d_model", "n_layers", "n_heads", "d_ff", "params", "vs budget"):
        table.add_column(name, justify="left" if name == "key" else "right")
    for e in entries:
        a = e.arch
        table.add_row(
            a.key, str(a.d_model), str(a.n_layers), str(a.n_heads), str(a.d_ff),
            f"{e.params:,}", f"{e.params / budget - 1:+.1%}",
        )  # fmt: skip
    return table


def trials_table(study: optuna.Study) -> Table:
    """One row per trial; the best complete trial in bold."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    table = Table(title=f"study {study.study_name}")
    columns = ("#", "state", "arch", "params", "batch", "lr", "wd", "warmup", "dropout", "epochs", "val loss", "AUC")
    for name in columns:
        table.add_column(name, justify="left" if name in ("state", "arch") else "right")
    for trial in trials:
        r = trial_row(trial)
        table.add_row(
            str(r["number"]), r["state"].lower(), r["arch"] or "-", _num(r["param_count"], ","),
            f"{r['micro_batch']}x{r['accumulation_steps']}" if r["micro_batch"] is not None else "-",
            _num(r["learning_rate"], ".1e"), _num(r["weight_decay"], ".1e"), _num(r["warmup_steps"], "d"),
            _num(r["dropout"], ".2f"),
            f"{_num(r['epochs_run'], 'd')}/{trial.user_attrs.get('epochs_planned', r['epochs'] or '-')}",
            _num(r["val_loss"], ".4f"), _num(r["val_auc"], ".3f"),
            style="bold" if best is not None and trial.number == best.number else None,
        )  # fmt: skip
    return table


def report_table(cells: list[Cell]) -> Table:
    """Each budget × horizon: the model's loss beside its baselines on the same split, and skill."""
    table = Table(
        title="per budget × horizon: loss (seed mean ± SE) beside baselines on the same split; "
        "skill = 1 − loss / constant's (± SE, block bootstrap); * no skill beyond 2 SE",
    )
    columns = ("job", "budget", "h", "val loss", "constant", "linear", "val skill", "test loss", "test skill",
               "params", "arch", "trials c/p/f of target", "val samples")  # fmt: skip
    for name in columns:  # numbers and keys are never cut: other columns wrap first
        table.add_column(name, justify="left" if name in ("job", "arch") else "right", no_wrap=name == "arch")
    for c in cells:
        b = c.best or {}
        val, test = c.skill.get("val", {}), c.skill.get("test", {})
        baselines = c.baselines or {}
        counts = f"{c.counts['complete']}/{c.counts['pruned']}/{c.counts['failed']} of {c.target}"
        table.add_row(
            c.job, format_budget(c.budget), f"h{c.horizon}",
            _pm(val.get("loss", c.val_loss), val.get("loss_se"), ".4f"),
            _num(baselines.get("constant", {}).get("val_loss"), ".4f"),
            _num(baselines.get("linear", {}).get("val_loss"), ".4f"),
            _pm(val.get("skill_constant"), val.get("skill_constant_se"), "+.3f") + ("*" * (has_skill(c) is False)),
            _pm(test.get("loss", (c.test or {}).get("test_loss")), test.get("loss_se"), ".4f"),
            _pm(test.get("skill_constant"), test.get("skill_constant_se"), "+.3f"),
            _num(b.get("param_count"), ","), b.get("arch") or "-", counts, _num(b.get("n_val"), ","),
        )  # fmt: skip
    return table


def _pm(value, se, spec: str) -> str:
    """value ± se, or the value alone when no SE was measured."""
    if se is None:
        return _num(value, spec)
    return f"{_num(value, spec)} ± {_num(se, spec.lstrip('+'))}"


def _num(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


class StudyProgress:
    """A live bar of finished trials with the running trial's epoch and losses."""

    def __init__(self, console: Console, study: optuna.Study, target: int):
        self.study = study
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        self.task = self.progress.add_task(study.study_name, total=target, completed=done, detail="")

    def __enter__(self) -> StudyProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def on_epoch(self, number: int, record: EpochRecord) -> None:
        detail = f"trial {number} epoch {record.epoch}: train {record.train_loss:.4f} val {record.val_loss:.4f}"
        self.progress.update(self.task, detail=detail)

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in FINISHED:
            self.progress.advance(self.task)
        best = best_trial(study)
        self.progress.update(self.task, detail="" if best is None else f"best {best.value:.4f} (trial {best.number})")


def memory_line(memory: dict) -> str:
    failed = memory["memory_failed"]
    return (
        f"{len(memory['dropped_at_enqueue'])} of {memory['grid_size']} architectures left out at enqueue "
        f"(too big for the memory limit); {len(failed)} failed at micro-batch 1"
        + (f" ({', '.join(failed)})" if failed else "")
    )
