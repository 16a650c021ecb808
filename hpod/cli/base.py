"""What the commands share: the `cli` group, the console, the common options and their types."""

from __future__ import annotations

import contextlib
import math
import os
import sys

import click
from rich.console import Console

from hpod.study.budget import parse_budget, parse_horizon, parse_list, parse_memory_gib

# Piped output (logs, CI) gets room for the trial table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 150)
err_console = Console(stderr=True)  # what a command says while it works (a status line), off stdout
state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="default: $HPOD_HOME, else the installed service's, else ~/.local/state/hpod",
)
storage_option = click.option("--storage", help="Optuna storage URL (default: SQLite in the state directory)")
job_option = click.option("--job", "job_file", type=click.Path(), help="job file (default: the architectural search)")
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


def complete_jobs(ctx: click.Context, param, incomplete: str) -> list:
    """Shell completion of JOB: the queue's job ids and study names (read-only; never fails)."""
    import sqlite3

    from click.shell_completion import CompletionItem

    from hpod.state import StateDir

    try:
        path = StateDir.resolve(ctx.params.get("state_dir")).queue_db
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            rows = db.execute("SELECT id, study_name, state FROM jobs ORDER BY id").fetchall()
    except Exception:
        return []
    items = [CompletionItem(str(i), help=f"{name} ({state})") for i, name, state in rows]
    items += [CompletionItem(name, help=f"job {i} ({state})") for i, name, state in rows]
    return [item for item in items if item.value.startswith(incomplete)]


def job_argument(name: str = "job", many: bool = False):
    """JOB wherever a job is meant: its id or its study's name, completed from the queue."""
    return click.argument(
        name, metavar="JOB..." if many else "JOB", nargs=-1 if many else 1, required=True, shell_complete=complete_jobs
    )


wide_option = click.option("--wide", is_flag=True, help="every column, however narrow the terminal")


class FiniteRange(click.FloatRange):
    """A FloatRange that also refuses nan (which every comparison lets through)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


HOURS = FiniteRange(min=0, min_open=True, max=24 * 365 * 10)
timeout_option = click.option("--timeout", type=HOURS, help="hours of running before the job ends")


COUNT = click.IntRange(min=1, max=10**9)  # within SQLite's integers, far past any study


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpod")
def cli() -> None:
    """Resumable architecture searches (Optuna studies) for scaling-law research."""


def study_options(command):
    """The options shared by `run` and `enqueue`: what to search and where."""
    options = (
        click.option("--budget", required=True, help="parameter budget(s): 2M, 500K, 1.5M, 2B; comma-separated"),
        click.option("--horizon", required=True, help="forecast horizon(s): h1, h3, h5; comma-separated"),
        click.option("--trials", type=COUNT, help="finished trials per study (default: the job's)"),
        click.option("--max-epochs", type=COUNT, help="cap on each trial's sampled epochs"),
        job_option,
        click.option("--data", type=click.Path(), help="CSV or Parquet file (default: bundled S&P 500)"),
        click.option(
            "--memory-limit",
            help="memory a trial may use, e.g. 20G (default: available RAM or free GPU memory less 10%)",
        ),
        state_dir_option,
        storage_option,
        click.option(
            "--no-ladder",
            is_flag=True,
            help="several budgets as independent studies (default: a ladder, each from the smaller one's best)",
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command


def load_request(budget: str, horizon: str, job_file, data, trials, max_epochs, memory_limit, no_ladder=False):
    """The job file with command-line overrides, and the parsed budgets and horizons."""
    from hpod.job import load_job

    limit = None if memory_limit is None else parse_memory_gib(memory_limit)
    overrides = {"trials": trials, "max_epochs": max_epochs, "memory_limit_gib": limit}
    job = load_job(job_file).with_overrides(data=data, transfer=False if no_ladder else None, **overrides)
    return job, parse_list(budget, parse_budget), parse_list(horizon, parse_horizon)


def quiet_optuna() -> None:
    """Optuna's own INFO lines would repeat ours; its warnings go through our handler."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
