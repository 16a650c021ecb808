"""What hpod shows a person in the terminal: tables and live progress (rich)."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpod.records import trial_row
from hpod.results.report import Cell
from hpod.results.skill import beats
from hpod.study.budget import format_budget
from hpod.study.duration import short_duration
from hpod.study.plan import best_trial
from hpod.supervisor.held_job import HeldJob
from hpod.supervisor.messages import Outcome, Phase, Report, ReportKind
from hpod.tables import Column, fitted
from hpod.trial.grid import GridEntry

GRID_COLUMNS = (
    Column("key", "left"),
    Column("d_model", rank=1),
    Column("n_layers", rank=1),
    Column("n_heads", rank=1),
    Column("d_ff", rank=1),
    Column("params"),
    Column("vs budget"),
)


def grid_table(entries: list[GridEntry], budget: int, width: int | None = None) -> Table:
    rows = [
        [e.arch.key, str(e.arch.d_model), str(e.arch.n_layers), str(e.arch.n_heads), str(e.arch.d_ff),
         f"{e.params:,}", f"{e.params / budget - 1:+.1%}"]
        for e in entries
    ]  # fmt: skip
    return fitted(GRID_COLUMNS, rows, width, title=f"{len(entries)} architectures within the budget of {budget:,}")


TRIAL_COLUMNS = (
    Column("#"),
    Column("state", "left"),
    Column("arch", "left"),
    Column("params", rank=1),
    Column("batch", rank=5),
    Column("lr", rank=4),
    Column("wd", rank=6),
    Column("warmup", rank=7),
    Column("dropout", rank=3),
    Column("epochs"),
    Column("val loss"),
    Column("AUC", rank=2),
)


def trials_table(study: optuna.Study, width: int | None = None) -> Table:
    """One row per trial; the best complete trial in bold."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    rows = [trial_cells(trial) for trial in trials]
    styles = ["bold" if best is not None and t.number == best.number else None for t in trials]
    return fitted(TRIAL_COLUMNS, rows, width, title=f"study {study.study_name}", styles=styles)


def trial_cells(trial: FrozenTrial) -> list[str]:
    r = trial_row(trial)
    return [
        str(r["number"]), r["state"].lower(), r["arch"] or "-", _num(r["param_count"], ","),
        f"{r['micro_batch']}x{r['accumulation_steps']}" if r["micro_batch"] is not None else "-",
        _num(r["learning_rate"], ".1e"), _num(r["weight_decay"], ".1e"), _num(r["warmup_steps"], "d"),
        _num(r["dropout"], ".2f"),
        f"{_num(r['epochs_run'], 'd')}/{trial.user_attrs.get('epochs_planned', r['epochs'] or '-')}",
        _num(r["val_loss"], ".4f"), _num(r["val_auc"], ".3f"),
    ]  # fmt: skip


EPOCH_COLUMNS = (
    Column("epoch"),
    Column("train loss"),
    Column("val loss"),
    Column("best val"),
    Column("lr", rank=1),
    Column("seconds", rank=2),
)


def epochs_table(trial: FrozenTrial, curve: list[dict], width: int | None = None) -> Table:
    """A trial's learning curve, an epoch a row; fields an older hpod did not record are "-"."""
    rows = [
        [str(r["epoch"]), _num(r.get("train_loss"), ".4f"), _num(r.get("val_loss"), ".4f"),
         _num(r.get("best_val_loss"), ".4f"), _num(r.get("learning_rate"), ".2e"), _num(r.get("seconds"), ".1f")]
        for r in curve
    ]  # fmt: skip
    title = f"trial {trial.number} ({trial.state.name.lower()}, {trial.params.get('arch', '?')})"
    return fitted(EPOCH_COLUMNS, rows, width, title=title)


REPORT_COLUMNS = (
    Column("budget"),
    Column("h"),
    Column("val mean"),
    Column("test mean"),
    Column("val skill", rank=1),
    Column("test skill", rank=2),
    Column("against", "left", rank=3),
    Column("test AUC", rank=4),
    Column("linear AUC", rank=5),
    Column("linear", rank=6),
    Column("trailing", rank=7),
    Column("constant", rank=8),
    Column("params"),
    Column("arch", "left"),
    Column("trials c/p/f", rank=9),
    Column("val n", rank=10),
    Column("job", "left", rank=11),
)
REPORT_CAPTION = (
    "mean: the seed runs' mean loss ± SE (the best trial's without seed runs); skill = 1 − loss / "
    "the strongest baseline's on that split (named under against), ± SE; * within 2 SE; "
    "AUC: the seed runs' and the linear baseline's on test"
)


def report_table(cells: list[Cell], width: int | None = None) -> Table:
    """Each budget × horizon: the model's loss beside its baselines on the same split, and skill;
    loss, uncertainty, size and architecture are kept whole at any width."""
    rows = [report_cells(c) for c in cells]
    return fitted(REPORT_COLUMNS, rows, width, title="per budget × horizon", caption=REPORT_CAPTION)


def report_cells(c: Cell) -> list[str]:
    b = c.best or {}
    val, test = c.skill.get("val", {}), c.skill.get("test", {})
    baselines = c.baselines or {}
    return [
        format_budget(c.budget), f"h{c.horizon}",
        _pm(val.get("loss", c.val_loss), val.get("loss_se"), ".4f"),
        _pm(test.get("loss", (c.test or {}).get("test_loss")), test.get("loss_se"), ".4f"),
        _pm(val.get("skill"), val.get("skill_se"), "+.3f") + ("*" * (beats(c.skill, "", "val") is False)),
        _pm(test.get("skill"), test.get("skill_se"), "+.3f") + ("*" * (beats(c.skill, "", "test") is False)),
        "/".join(dict.fromkeys(split["strongest"] for split in (val, test) if "strongest" in split)) or "-",
        _num(test.get("auc"), ".3f"), _num(test.get("auc_linear"), ".3f"),
        *(_num(baselines.get(name, {}).get("val_loss"), ".4f") for name in ("linear", "trailing", "constant")),
        _num(b.get("param_count"), ","), b.get("arch") or "-",
        f"{c.counts['complete']}/{c.counts['pruned']}/{c.counts['failed']} of {c.target}",
        _num(b.get("n_val"), ","), c.job,
    ]  # fmt: skip


RESULT_FIELDS = ("val mean", "test mean", "val skill", "test skill", "against", "test AUC")


def result_line(c: Cell, run_s: float, device: str | None) -> str:
    """A done job's result as `hpod show` leads with it: the report's cells for its study, then
    how long it took and where."""
    cells = dict(zip((column.name for column in REPORT_COLUMNS), report_cells(c), strict=True))
    seeds = (c.test or {}).get("seeds", 0)
    shown = " · ".join(f"{name} {cells[name]}" for name in RESULT_FIELDS if cells[name] != "-")
    return f"  result: {shown} · {seeds} seed runs · {short_duration(run_s)} on {device or 'unknown device'}"


def _pm(value, se, spec: str) -> str:
    """value ± se, or the value alone when no SE was measured."""
    if se is None:
        return _num(value, spec)
    return f"{_num(value, spec)}±{_num(se, spec.lstrip('+'))}"


def _num(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


class RunProgress:
    """`hpod run`'s live view, fed by the workers' reports: a bar of each study's finished
    search trials, with the running trial's epoch and loss, or the phase it is in."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[int, TaskID] = {}

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def on_report(self, job: HeldJob, report: Report) -> None:
        if job.id not in self.tasks:
            done = job.queued.trials_finished
            self.tasks[job.id] = self.progress.add_task(job.name, total=job.queued.target, completed=done, detail="")
        task = self.tasks[job.id]
        if report.kind == ReportKind.EPOCH:
            detail = f"{job.phase} trial {report.trial} epoch {report.epoch}: val {report.val_loss:.4f}"
            self.progress.update(task, detail=detail)
        elif report.kind == ReportKind.PAUSED:
            self.progress.update(task, detail=f"paused: {report.reason}")
        elif report.kind == ReportKind.FINISHED:
            if job.phase == Phase.SEARCH and report.outcome in (Outcome.COMPLETE, Outcome.PRUNED):
                self.progress.advance(task)
            what = job.phase if report.trial is None else f"{job.phase} trial {report.trial}"
            self.progress.update(task, detail=f"{what}: {report.outcome.lower()}")


SHOWN_FAILURES = 10


def failure_lines(study: optuna.Study) -> list[str]:
    """Why the study's latest failed trials failed, with the file holding each traceback."""
    failed = [trial_row(t) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))]
    lines = [
        f"trial {r['number']} failed: {r['fail_reason'] or 'no reason recorded'}"
        + (f" (traceback: {r['traceback']})" if r["traceback"] else "")
        for r in failed[-SHOWN_FAILURES:]
    ]
    hidden = len(failed) - len(lines)
    return ([f"{hidden} earlier failed trials: hpod export"] if hidden else []) + lines


def job_lines(job: dict, summary: dict) -> list[str]:
    """A job as `hpod show` heads it: state, settings, estimate."""
    from hpod.study.duration import Estimate, duration

    s = summary["settings"]
    cap = "" if s["max_epochs"] is None else f" (capped at {s['max_epochs']})"
    estimate = summary["estimate"]
    known = None if estimate is None else Estimate.from_dict(estimate)
    timed = "none (--no-estimate, or nothing could be timed here)" if known is None else known.describe()
    if known is not None and job["state"] == "done":  # how it landed, so the next one can be judged
        timed += f"; took {duration(job['elapsed_s'])}, {job['elapsed_s'] / known.expected_s:.2f}× its expected"
    return [
        f"job {job['id']} {job['study']}: {job['state']}, {job['trials_finished']}/{job['n_trials']} trials, "
        f"priority {s['priority']}" + ("" if s["timeout_h"] is None else f", timeout {s['timeout_h']:g} h"),
        f"  epochs {'/'.join(map(str, s['epochs']))}{cap}, pruner {s['pruner']}, patience {s['patience']}, "
        f"batch {s['effective_batch']}, {s['final_seeds']} seed runs, device {s['device']}",
        f"  storage: {s['storage']}" + ("" if s["on_event"] is None else f"; on_event: {s['on_event']}"),
        f"  estimate: {timed}",
        *[f"    {note}" for note in (() if known is None else (known.rests_on, *known.notes))],
        *([f"  {job['state']}: {job['last_error']}"] if job["state"] == "failed" and job["last_error"] else []),
        *([f"  last failure: {job['last_failure']}"] if job["last_failure"] else []),
    ]


def memory_line(memory: dict) -> str:
    failed = memory["memory_failed"]
    return (
        f"{len(memory['dropped_at_enqueue'])} of {memory['grid_size']} architectures left out at enqueue "
        f"(too big for the memory limit); {len(failed)} failed at micro-batch 1"
        + (f" ({', '.join(failed)})" if failed else "")
    )
