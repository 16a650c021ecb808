"""The commands that read or feed studies rather than the queue: `grid`, `report`, `export`,
`import`. They register on the `cli` group of base.py; main.py imports this module."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hpod.cli.base import (
    cli,
    console,
    job_argument,
    job_option,
    json_option,
    quiet_optuna,
    state_dir_option,
    storage_option,
    wide_option,
)
from hpod.errors import HpodError
from hpod.state import StateDir
from hpod.storage import open_storage
from hpod.study.budget import parse_budget, parse_horizon
from hpod.supervisor.queue import Queue
from hpod.tables import show as show_table
from hpod.tables import table_width


@cli.command()
@click.option("--budget", required=True, help="parameter budget: 2M, 500K, 1.5M, 2B")
@click.option("--horizon", help="forecast horizon (checked; the grid does not depend on it)")
@job_option
@json_option
@click.option("--verify", "check", is_flag=True, help="build every architecture on the meta device and compare counts")
@wide_option
def grid(budget, horizon, job_file, as_json, check, wide) -> None:
    """A budget's architectures with exact parameter counts.

    \b
    Example:
      hpod grid --budget 2M --horizon h1
    """
    from hpod.display import grid_table
    from hpod.job import load_job
    from hpod.trial.data import data_shape
    from hpod.trial.grid import require_grid, verify

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
        show_table(console, grid_table(entries, count, table_width(console, wide)))
    if check:
        mismatches = verify(entries, shape)
        for entry, built in mismatches:
            click.echo(f"MISMATCH {entry.arch.key}: formula {entry.params:,} != built {built:,}", err=True)
        if mismatches:
            sys.exit(1)
        click.echo(f"verified: {len(entries)} architectures, formula == sum(p.numel()) on the meta device", err=True)


@cli.command()
@click.option("--job-name", "--job", "job_name", help="only the studies of this job file's name (default: all)")
@click.option("--plot", type=click.Path(dir_okay=False), help="write the figure to this PNG file")
@click.option("--bootstrap", type=click.IntRange(min=0, max=100_000), default=1000, show_default=True,
              help="resamples for the confidence intervals (0: none)")  # fmt: skip
@json_option
@state_dir_option
@storage_option
@wide_option
def report(job_name, plot, bootstrap, as_json, state_dir, storage, wide) -> None:
    """Best trial per budget × horizon, and the scaling law.

    Each cell beside its baselines on the same split, the fitted L = E + A·N^-α with its verdict,
    the ladder's warm starts, and warnings.

    \b
    Examples:
      hpod report
      hpod report --job-name tiny --plot law.png
    """
    from hpod.display import report_table
    from hpod.results.plots import plot_report
    from hpod.results.report import as_json as report_json
    from hpod.results.report import cells, describe, laws, warm_start

    quiet_optuna()
    state = StateDir.resolve(state_dir)
    if storage is None and not state.optuna_db.exists():
        raise HpodError(f"no studies yet in {state.root}")
    if plot is not None and not plot.lower().endswith(".png"):
        raise HpodError(f"plot file {plot!r} must end in .png")
    found = cells(open_storage(state.storage_url(storage), create=False), state.checkpoints, job_name, bootstrap)
    if not found:
        raise HpodError(f"no hpod studies{f' of job {job_name!r}' if job_name else ''} in the storage")
    fits = laws(found)
    if plot is not None:
        write_output(Path(plot), lambda path: plot_report(found, fits, path), "plot file")
    if as_json:
        click.echo(json.dumps(report_json(found, fits), indent=2))
        return
    show_table(console, report_table(found, table_width(console, wide)))
    for fit in fits:
        console.print(describe(fit))
    for note in filter(None, map(warm_start, found)):
        console.print(note, highlight=False)
    for warning in (w for c in found for w in c.warnings):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if plot is not None:
        console.print(f"figure: {plot}")


@cli.command()
@job_argument()
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="file to write (default: stdout)")
@state_dir_option
@storage_option
def export(job, fmt, output, state_dir, storage) -> None:
    """Write a job's trials with their architecture columns.

    JOB is a job id or a study name.

    \b
    Example:
      hpod export 3 --format csv -o trials.csv
    """
    from hpod.cli.jobs import find_job
    from hpod.records import export_text
    from hpod.study.plan import load_named_study

    quiet_optuna()
    state = StateDir.resolve(state_dir)
    queued = find_job(state, job)
    if queued is not None:
        job, storage = queued.study_name, storage or queued.storage
    study = load_named_study(job, state, storage)
    text = export_text(study.get_trials(deepcopy=False), fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_output(Path(output), lambda path: path.write_text(text), "output file")


@cli.command(name="import")
@job_argument()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--exclude-arch", multiple=True, help="architecture key to leave out (repeatable)")
@state_dir_option
def import_(job, files, exclude_arch, state_dir) -> None:
    """Add prior trials to a job's study.

    From hpod JSON exports, trial_NNNN.json files or hpod trial logs.

    \b
    Example:
      hpod import 3 old/trial_0001.json
    """
    from hpod.supervisor.import_job import import_into_job

    quiet_optuna()
    state = StateDir.resolve(state_dir)
    for line in import_into_job(state, Queue.existing(state).find(job).id, [Path(f) for f in files], set(exclude_arch)):
        click.echo(line)


def write_output(path: Path, write, what: str) -> None:
    """Write a file the user named; a path that cannot be written is one line, not a traceback."""
    try:
        write(path)
    except OSError as exc:
        raise HpodError(f"{what} {path}: cannot be written ({exc.strerror or exc})") from None
