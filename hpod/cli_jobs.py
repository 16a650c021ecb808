"""The commands that describe queued jobs: `show` (any job, queued ones included, or a study by
name), `log` (a job's trial log, followed with -f) and `plan` (what fits in the night). They
register on the `cli` group of cli.py, which imports this module."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import click

from hpod.cli import (
    FiniteRange,
    cli,
    console,
    json_option,
    quiet_optuna,
    state_dir_option,
    storage_option,
    wide_option,
)
from hpod.errors import HpodError
from hpod.state import DamagedError, StateDir
from hpod.supervisor.queue import Queue
from hpod.supervisor.status import ENDED, job_status
from hpod.tables import Column, fitted, table_width
from hpod.tables import show as show_table

FOLLOW_POLL_S = 1.0


@cli.command()
@click.argument("ref", metavar="JOB|STUDY")
@json_option
@state_dir_option
@storage_option
@wide_option
def show(ref, as_json, state_dir, storage, wide) -> None:
    """A job, queued ones too, or a study by name: settings, grid, estimate, then its trials."""
    from hpod.display import failure_lines, job_lines, memory_line, trials_table
    from hpod.records import MEMORY_FAILED, trial_row
    from hpod.study.plan import load_named_study
    from hpod.supervisor.job_row import job_summary

    quiet_optuna()
    state = StateDir.resolve(state_dir)
    row = find_job(state, ref)
    if row is None:  # a study by name: it must exist, and the error names those there are
        summary, study = None, load_named_study(ref, state, storage)
    else:  # a queued job's study may not have been created yet
        summary, study = job_summary(row), existing_study(state, row["study_name"], storage or row["storage"])
    trials = [] if study is None else [trial_row(t) for t in study.get_trials(deepcopy=False)]
    failed = [] if study is None else study.user_attrs.get(MEMORY_FAILED, [])
    memory = None if summary is None else {**summary["memory"], "memory_failed": failed}
    if as_json:
        job = None if row is None else job_status(row) | summary
        click.echo(json.dumps({"job": job, "memory": memory, "trials": trials}, indent=2))
        return
    for line in [] if row is None else job_lines(job_status(row), summary):
        console.print(line, highlight=False)
    if study is not None:
        show_table(console, trials_table(study, table_width(console, wide)))
        for line in failure_lines(study):
            console.print(line, highlight=False, soft_wrap=True)
    if memory is not None:
        console.print(f"job {row['id']}: {memory_line(memory)}", highlight=False)


def find_job(state: StateDir, ref: str) -> dict | None:
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
@click.argument("ref", metavar="JOB|STUDY")
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines until the job ends (Ctrl-C to leave)")
@state_dir_option
def log(ref, follow, state_dir) -> None:
    """A job's trial log (state/logs/STUDY.log): one line per finished trial."""
    state = StateDir.resolve(state_dir)
    queue = Queue.existing(state)
    row = queue.find(ref)
    path = state.logs / f"{row['study_name']}.log"
    if not follow and not path.exists():
        click.echo(f"job {row['id']} ({row['study_name']}, {row['state']}): no trial has finished yet", err=True)
        return
    print_log(path, (lambda: queue.job(row["id"])["state"] in ENDED) if follow else (lambda: True))


def print_log(path: Path, ended: Callable[[], bool], poll_s: float = FOLLOW_POLL_S) -> None:
    """Print the log from where it was last read, until `ended` says so; lines written while
    it was asked are still printed."""
    offset = 0
    while True:
        last = ended()
        if path.exists():
            with path.open() as f:
                f.seek(offset)
                text = f.read()
                offset = f.tell()
            click.echo(text, nl=False)
        if last:
            return
        time.sleep(poll_s)


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
    """What of the queue fits in the given hours at the measured speeds, in claim order."""
    from hpod.study.estimate import duration
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
