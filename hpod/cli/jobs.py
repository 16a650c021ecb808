"""The commands that describe queued jobs: `show` (any job, queued ones included, or a study by
name), `log` (a job's trial log, followed with -f) and `plan` (what fits in the night). They
register on the `cli` group of base.py; main.py imports this module."""

from __future__ import annotations

import datetime as dt
import glob
import json
import time
from collections.abc import Callable
from pathlib import Path

import click

from hpod.cli.base import (
    COUNT,
    FiniteRange,
    cli,
    console,
    job_argument,
    json_option,
    quiet_optuna,
    state_dir_option,
    storage_option,
    wide_option,
)
from hpod.errors import HpodError
from hpod.state import DamagedError, StateDir, refuse_link, regular_file
from hpod.storage import shown_url
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import QueuedJob
from hpod.supervisor.status import job_status
from hpod.tables import Column, fitted, table_width
from hpod.tables import show as show_table

FOLLOW_POLL_S = 1.0
MAX_LOG_BYTES = 2**30  # a trial log holds a line per trial; past it, not what hpod wrote


@cli.command()
@job_argument("ref")
@json_option
@state_dir_option
@storage_option
@wide_option
def show(ref, as_json, state_dir, storage, wide) -> None:
    """A job's settings, estimate and trials, or a study's.

    JOB is a job id or a study name; a queued job is shown before its study exists.

    \b
    Examples:
      hpod show 3
      hpod show tiny-2M-h1 --json
    """
    from hpod.display import failure_lines, job_lines, memory_line, trials_table
    from hpod.records import MEMORY_FAILED, TRANSFER, TRANSFERRED_FROM, trial_row
    from hpod.study.plan import best_trial, load_named_study
    from hpod.study.transfer import describe

    quiet_optuna()
    state = StateDir.resolve(state_dir)
    job = find_job(state, ref)
    if job is None:  # a study by name: it must exist, and the error names those there are
        summary, study = None, load_named_study(ref, state, storage)
    else:  # a queued job's study may not have been created yet
        summary, study = job_summary(job), existing_study(state, job.study_name, storage or job.storage)
    trials = [] if study is None else [trial_row(t) for t in study.get_trials(deepcopy=False)]
    failed = [] if study is None else study.user_attrs.get(MEMORY_FAILED, [])
    memory = None if summary is None else {**summary["memory"], "memory_failed": failed}
    transfer = None if study is None else study.user_attrs.get(TRANSFER)
    if as_json:
        shown = None if job is None else job_status(job) | summary
        click.echo(json.dumps({"job": shown, "memory": memory, "transfer": transfer, "trials": trials}, indent=2))
        return
    lines = [] if job is None else job_lines(job_status(job), summary)
    if job is not None and study is not None and job.state == "done":
        lines.insert(1, done_result(study, state, job))
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    if study is not None:
        show_table(console, trials_table(study, table_width(console, wide)))
        best = best_trial(study)
        source = None if best is None else best.user_attrs.get(TRANSFERRED_FROM)
        if (warm := describe(transfer, None if best is None else best.number, source)) is not None:
            console.print(warm, highlight=False, soft_wrap=True)
        for line in failure_lines(study):
            console.print(line, highlight=False, soft_wrap=True)
    if memory is not None:
        console.print(f"job {job.id}: {memory_line(memory)}", highlight=False)


def done_result(study, state: StateDir, job: QueuedJob) -> str:
    """What a done job found, measured as `hpod report` measures its cell."""
    from hpod.display import result_line
    from hpod.records import DEVICE
    from hpod.results.report import cell, measure
    from hpod.study.plan import best_trial

    found = cell(study, state.checkpoints)
    measure([found], resamples=200)
    best = best_trial(study)
    return result_line(found, job.run_s, None if best is None else best.user_attrs.get(DEVICE))


def job_summary(job: QueuedJob) -> dict:
    """What `hpod show` says of a job, queued or not: its settings, grid and estimate."""
    from hpod.study.plan import plan_study

    spec = job.spec
    search, train = spec.search, spec.train
    return {
        "settings": {
            "trials": job.target,
            "epochs": list(search.epochs),
            "max_epochs": job.max_epochs,
            "pruner": search.pruner,
            "patience": train.patience,
            "effective_batch": train.effective_batch,
            "final_seeds": search.final_seeds,
            "device": train.device,
            "priority": job.priority,
            "timeout_h": None if job.timeout_s is None else job.timeout_s / 3600,
            "storage": "SQLite in the state directory" if job.storage is None else shown_url(job.storage),
            "on_event": spec.on_event,
        },
        "memory": {
            "grid_size": len(plan_study(spec, job.budget, job.horizon).grid),
            "dropped_at_enqueue": sorted(job.dropped_archs),
        },
        "estimate": None if job.estimate is None else job.estimate.as_dict(),
    }


def find_job(state: StateDir, ref: str) -> QueuedJob | None:
    """The job `ref` names (an id or a queued study's name); None for a name the queue lacks."""
    if not state.queue_db.exists() and not ref.isdigit():
        return None
    try:
        return Queue.existing(state).find(ref)
    except HpodError:
        if ref.isdigit():
            raise
        return None


def existing_study(state: StateDir, name: str, storage: str | None):
    """The study if it has been created; None otherwise."""
    from hpod.study.plan import load_named_study

    try:
        return load_named_study(name, state, storage)
    except DamagedError:
        raise
    except HpodError:
        return None


@cli.command()
@job_argument("ref")
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines until the job ends (Ctrl-C to leave)")
@click.option("-n", "--lines", "last", type=COUNT, help="only the last N lines (then follow, with -f)")
@click.option("--trial", type=click.IntRange(min=0), help="one search trial's epochs: losses, learning rate, time")
@state_dir_option
def log(ref, follow, last, trial, state_dir) -> None:
    """A job's trial log: one line per finished trial and seed run.

    Search trials (state/logs/STUDY.log) and the seed runs of its best (STUDY-seeds-tN.log),
    in time order, failures with their reasons; -f follows them until the job ends.

    \b
    Examples:
      hpod log 3 -f -n 20
      hpod log tiny-2M-h1 --trial 7
    """
    state = StateDir.resolve(state_dir)
    queue = Queue.existing(state)
    job = queue.find(ref)
    if trial is not None:
        show_trial_epochs(existing_study(state, job.study_name, job.storage), job, trial)
        return
    ended = (lambda: queue.job(job.id).ended) if follow else (lambda: True)
    feed = StudyLines(state, job, epochs=follow)
    if not print_log(lambda: log_paths(state, job.study_name), ended, last, feed) and not follow:
        click.echo(f"job {job.id} ({job.study_name}, {job.state}): no trial has finished yet", err=True)


def log_paths(state: StateDir, study: str) -> list[Path]:
    """The search's trial log and its seed studies', those there are."""
    seeds = sorted(state.logs.glob(f"{glob.escape(study)}-seeds-t*.log")) if state.logs.is_dir() else []
    return [p for p in [state.logs / f"{study}.log", *seeds] if p.exists() or p.is_symlink()]


def print_log(paths: Callable[[], list[Path]], ended: Callable[[], bool], last: int | None = None,
              more: Callable[[], list[str]] = list, poll_s: float = FOLLOW_POLL_S) -> int:  # fmt: skip
    """Print the logs' new lines and `more`'s, merged in time order (each begins with its time),
    from where each was last read, until `ended` says so; lines written while it was asked
    still print. The first batch is cut to its `last` lines. Returns the lines printed."""
    offsets: dict[Path, int] = {}
    printed = 0
    while True:
        done = ended()
        lines = sorted([*(line for path in paths() for line in new_lines(path, offsets)), *more()])
        if last is not None:
            lines, last = lines[-last:], None
        for line in lines:
            click.echo(line)
        printed += len(lines)
        if done:
            return printed
        time.sleep(poll_s)


def new_lines(path: Path, offsets: dict[Path, int]) -> list[str]:
    """The lines added to a log since `offsets` last saw it; a seed run's say so."""
    regular_file(refuse_link(path), "trial log", MAX_LOG_BYTES)  # a FIFO would block, a link leak
    with path.open(errors="replace") as f:  # a damaged line is shown damaged, not a traceback
        f.seek(offsets.get(path, 0))
        text = f.read()
        offsets[path] = f.tell()
    seeds = path.stem.rpartition("-seeds-t")[2] if "-seeds-t" in path.stem else None
    lines = text.splitlines()
    if seeds is None:
        return lines
    return [f"{when} seed run of trial {seeds}: {rest}" for when, _, rest in (line.partition(" ") for line in lines)]


class StudyLines:
    """What the trial logs do not hold, read from the job's studies: the guard's pauses, at the
    time each began, and (following) each epoch of a running trial as it ends; each line once."""

    def __init__(self, state: StateDir, job: QueuedJob, epochs: bool):
        self.state, self.job, self.epochs = state, job, epochs
        self.seen: set[tuple] = set()

    def __call__(self) -> list[str]:
        import optuna

        from hpod.storage import open_storage

        if self.job.storage is None and not self.state.optuna_db.exists():
            return []
        storage = open_storage(self.state.storage_url(self.job.storage), create=False)
        study, seeds = self.job.study_name, f"{self.job.study_name}-seeds-t"
        lines = []
        for name in (n for n in optuna.get_all_study_names(storage) if n == study or n.startswith(seeds)):
            run = "trial" if name == study else "seed run"
            for trial in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
                lines += self.pause_lines(name, run, trial) + self.epoch_lines(name, run, trial)
        return lines

    def pause_lines(self, name: str, run: str, trial) -> list[str]:
        from hpod.logs import DATE_FORMAT
        from hpod.records import PAUSES

        return [
            f"{dt.datetime.fromtimestamp(p['began']).astimezone().strftime(DATE_FORMAT)} {run} {trial.number} "
            f"paused {p['seconds']:.0f} s: {p['reason']}"
            for k, p in enumerate(trial.user_attrs.get(PAUSES, []))
            if p.get("began") is not None and self.once(name, trial.number, "pause", k)
        ]

    def epoch_lines(self, name: str, run: str, trial) -> list[str]:
        from optuna.trial import TrialState

        from hpod.records import timestamp

        if not self.epochs or trial.state != TrialState.RUNNING:
            return []
        return [
            f"{timestamp()} {run} {trial.number} epoch {epoch}: best val {value:.4f}"
            for epoch, value in sorted(trial.intermediate_values.items())
            if self.once(name, trial.number, epoch)
        ]

    def once(self, *key) -> bool:
        new = key not in self.seen
        self.seen.add(key)
        return new


def show_trial_epochs(study, job: QueuedJob, number: int) -> None:
    """One search trial's epochs, as the study recorded them when it ended (a running trial:
    the best val loss it has reported at each epoch)."""
    from hpod.display import epochs_table
    from hpod.records import LEARNING_CURVE

    trials = [] if study is None else [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not trials:
        raise HpodError(f"job {job.id} ({job.study_name}) has no trial {number}")
    [trial] = trials
    curve = trial.user_attrs.get(LEARNING_CURVE)
    if curve is None:
        curve = [{"epoch": e, "best_val_loss": v} for e, v in sorted(trial.intermediate_values.items())]
    show_table(console, epochs_table(trial, curve, table_width(console)))


PLAN_COLUMNS = (
    Column("id"),
    Column("study", "left", rank=2),
    Column("state", "left"),
    Column("per run"),
    Column("time left"),
    Column("finishes in"),
    Column("runs tonight"),
)


@cli.command()
@click.option("--hours", type=FiniteRange(min=0, min_open=True, max=24 * 365), required=True,
              help="how long the daemon will run")  # fmt: skip
@json_option
@state_dir_option
@wide_option
def plan(hours, as_json, state_dir, wide) -> None:
    """What of the queue fits in the given hours.

    At the speeds measured here, in claim order.

    \b
    Example:
      hpod plan --hours 10
    """
    from hpod.study.duration import duration
    from hpod.supervisor.planning import plan_queue

    planned = plan_queue(Queue.existing(StateDir.resolve(state_dir)).in_claim_order(), hours)
    if as_json:
        click.echo(json.dumps(planned, indent=2))
        return

    def shown(seconds: float | None) -> str:
        return "?" if seconds is None else duration(seconds)

    rows = [
        [str(p["id"]), p["study"], p["state"], shown(p["run_s"]), shown(p["left_s"]),
         "-" if p["finishes_after_s"] is None else shown(p["finishes_after_s"]),
         f"{p['runs_in_window']}/{p['runs_left']}"]
        for p in planned
    ]  # fmt: skip
    title = f"the queue in {hours:g} h, in claim order (one worker; ? = no estimate)"
    show_table(console, fitted(PLAN_COLUMNS, rows, table_width(console, wide), title=title))
