"""The `hpod` command line. Expected failures print one line, `Error: …`, and exit 2.

click, because its commands and options are declared next to the functions they call, it
validates types and choices before our code runs, and it is a dependency of the tools around
Optuna already.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click
import optuna
from rich.console import Console
from rich.logging import RichHandler

from hpod.budget import parse_budget, parse_horizon, parse_list
from hpod.data import data_shape, load_dataset
from hpod.display import StudyProgress, grid_table, trials_table
from hpod.errors import HpodError
from hpod.grid import require_grid, verify
from hpod.job import load_job
from hpod.records import export_text
from hpod.search import Objective, TrialLog, open_study, plan_study, run_study
from hpod.state import StateDir, open_storage

# Piped output (logs, CI) gets room for the trial table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 150)
state_dir_option = click.option("--state-dir", type=click.Path(file_okay=False), help="default: $HPOD_HOME or ./state")
storage_option = click.option("--storage", help="Optuna storage URL (default: SQLite in the state directory)")
job_option = click.option("--job", "job_file", type=click.Path(), help="job file (default: the architectural search)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpod")
def cli() -> None:
    """Resumable architecture searches (Optuna studies) for scaling-law research."""


@cli.command()
@click.option("--budget", required=True, help="parameter budget(s): 2M, 500K, 1.5M, 2B; comma-separated")
@click.option("--horizon", required=True, help="forecast horizon(s): h1, h3, h5; comma-separated")
@click.option("--trials", type=click.IntRange(min=1), help="finished trials per study (default: the job's)")
@click.option("--max-epochs", type=click.IntRange(min=1), help="cap on each trial's sampled epochs")
@job_option
@click.option("--data", type=click.Path(), help="CSV or Parquet file (default: bundled S&P 500)")
@state_dir_option
@storage_option
def run(budget, horizon, trials, max_epochs, job_file, data, state_dir, storage) -> None:
    """Run studies in the foreground, one after another, without the queue."""
    job = load_job(job_file).with_overrides(data=data, trials=trials, max_epochs=max_epochs)
    budgets, horizons = parse_list(budget, parse_budget), parse_list(horizon, parse_horizon)
    plans = [plan_study(job, b, h) for b in budgets for h in horizons]
    datasets = {h: load_dataset(job.data, h) for h in horizons}  # all input checked before writing
    state = StateDir.resolve(state_dir).create()
    store = open_storage(state.storage_url(storage))
    for plan in plans:
        study = open_study(plan, store)
        target = plan.job.search.n_trials
        with StudyProgress(console, study, target) as progress:
            objective = Objective(plan, datasets[plan.horizon], study.sampler, on_epoch=progress.on_epoch)
            callbacks = [TrialLog(state.logs / f"{plan.name}.log"), progress.on_trial]
            run_study(study, objective, target, callbacks)
        console.print(trials_table(study))


@cli.command()
@click.option("--budget", required=True, help="parameter budget: 2M, 500K, 1.5M, 2B")
@click.option("--horizon", help="forecast horizon (checked; the grid does not depend on it)")
@job_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--verify", "check", is_flag=True, help="build every architecture on the meta device and compare counts")
def grid(budget, horizon, job_file, as_json, check) -> None:
    """The architectures of a budget's grid with their exact parameter counts."""
    job = load_job(job_file)
    count = parse_budget(budget)
    if horizon is not None:
        parse_horizon(horizon)
    shape = data_shape(job.data)
    entries = require_grid(job.grid, shape, count)
    if as_json:
        rows = [{"key": e.arch.key, **vars(e.arch), "params": e.params} for e in entries]
        click.echo(json.dumps(rows, indent=2))
    else:
        console.print(grid_table(entries, count))
    if check:
        mismatches = verify(entries, shape)
        for entry, built in mismatches:
            click.echo(f"MISMATCH {entry.arch.key}: formula {entry.params:,} != built {built:,}", err=True)
        if mismatches:
            sys.exit(1)
        click.echo(f"verified: {len(entries)} architectures, formula == sum(p.numel()) on the meta device", err=True)


@cli.command()
@click.argument("job")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="file to write (default: stdout)")
@state_dir_option
@storage_option
def export(job, fmt, output, state_dir, storage) -> None:
    """Write a study's trials with their architecture columns."""
    study = load_existing_study(job, state_dir, storage)
    text = export_text(study.get_trials(deepcopy=False), fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text)


def load_existing_study(name: str, state_dir: str | None, storage: str | None) -> optuna.Study:
    state = StateDir.resolve(state_dir)
    url = state.storage_url(storage)
    if storage is None and not state.optuna_db.exists():
        raise HpodError(f"no studies yet in {state.root}")
    store = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage=store, include_best_trial=False)]
    if name not in names:
        raise HpodError(f"no study named {name!r} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=store)


def setup_logging() -> None:
    handler = RichHandler(console=console, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler])
    logging.getLogger("hpod").setLevel(logging.INFO)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command, turning expected failures into one line and an exit code."""
    setup_logging()
    try:
        cli.main(args=argv, prog_name="hpod", standalone_mode=False)
    except HpodError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return 2
    except (click.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        return 130
    return 0
