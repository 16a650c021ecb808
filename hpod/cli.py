"""The `hpod` command line. Expected failures print one line, `Error: …`, and exit 2.

click, because its commands and options are declared next to the functions they call, and it
checks types and choices before our code runs. Commands that train or open studies import
torch and Optuna inside their function, so that `status`, `stop`, `pause` and friends answer
in a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from functools import partial

import click
from rich.console import Console
from rich.logging import RichHandler

from hpod.errors import HpodError
from hpod.logs import TERMINAL_TIME, plain_handler
from hpod.state import OPENED, PRIVATE_UMASK, StateDir, damaged, is_damage, is_unreachable, open_storage
from hpod.study.budget import parse_budget, parse_horizon, parse_list, parse_memory_gib
from hpod.supervisor.outage import OUTAGE_LIMIT_S, root_error
from hpod.supervisor.queue import Queue
from hpod.supervisor.status import collect, hosts_table, machine_line, notice_lines, status_table
from hpod.tables import show as show_table
from hpod.tables import table_width

# Piped output (logs, CI) gets room for the trial table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 150)
state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="default: $HPOD_HOME, else the installed service's, else ~/.local/state/hpod",
)
storage_option = click.option("--storage", help="Optuna storage URL (default: SQLite in the state directory)")
job_option = click.option("--job", "job_file", type=click.Path(), help="job file (default: the architectural search)")
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")
wide_option = click.option("--wide", is_flag=True, help="every column, however narrow the terminal")


class FiniteRange(click.FloatRange):
    """A FloatRange that also refuses nan (which every comparison lets through)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


COUNT = click.IntRange(min=1, max=10**9)  # within SQLite's integers, far past any study
JOB_ID = click.IntRange(min=1, max=2**62)


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
    )
    for option in reversed(options):
        command = option(command)
    return command


def load_request(budget: str, horizon: str, job_file, data, trials, max_epochs, memory_limit):
    """The job file with command-line overrides, and the parsed budgets and horizons."""
    from hpod.job import load_job

    limit = None if memory_limit is None else parse_memory_gib(memory_limit)
    job = load_job(job_file).with_overrides(data=data, trials=trials, max_epochs=max_epochs, memory_limit_gib=limit)
    return job, parse_list(budget, parse_budget), parse_list(horizon, parse_horizon)


@cli.command()
@study_options
def run(budget, horizon, trials, max_epochs, job_file, data, memory_limit, state_dir, storage) -> None:
    """Run studies in the foreground, one after another, without the queue."""
    from hpod.display import StudyProgress, trials_table
    from hpod.study.plan import plan_study
    from hpod.supervisor.foreground import Foreground
    from hpod.supervisor.job_row import fit_to_memory
    from hpod.trial.data import load_dataset

    quiet_optuna()
    job, budgets, horizons = load_request(budget, horizon, job_file, data, trials, max_epochs, memory_limit)
    plans = [fit_to_memory(plan_study(job, b, h), force=False) for b in budgets for h in horizons]
    datasets = {h: load_dataset(job.data, h) for h in horizons}  # all input checked before writing
    state = StateDir.resolve(state_dir).create()
    runner = Foreground(state, open_storage(state.storage_url(storage)), datasets, partial(StudyProgress, console))
    for plan in plans:
        study, tested = runner.run(plan)
        show_table(console, trials_table(study, table_width(console)))
        if tested is not None:
            console.print(f"{plan.name}: best trial {tested['trial']} test loss {tested['test_loss']:.4f}")


@cli.command()
@study_options
@click.option(
    "--priority", type=click.IntRange(-(10**9), 10**9), default=0, show_default=True, help="higher runs first"
)
@click.option("--timeout", type=FiniteRange(min=0, min_open=True, max=24 * 365 * 10),
              help="hours of running before the job ends")  # fmt: skip
@click.option(
    "--force",
    is_flag=True,
    help="queue even if the same study is already queued or running, no architecture fits this machine's "
    "memory, or the study is estimated to run past search.max_days",
)
@click.option(
    "--no-estimate", is_flag=True, help="queue without timing training steps here (a study for another machine)"
)
@json_option
def enqueue(
    budget, horizon, trials, max_epochs, job_file, data, memory_limit, state_dir, storage, priority, timeout, force,
    no_estimate, as_json,
) -> None:  # fmt: skip
    """Queue one study per budget × horizon, after checking all of them and timing training steps
    here; prints the job ids and how long each should take."""
    from hpod.study.estimate import Estimate
    from hpod.supervisor.job_row import prepare_jobs
    from hpod.trial.device import check_device
    from hpod.trial.probe import KeyedFile

    job, budgets, horizons = load_request(budget, horizon, job_file, data, trials, max_epochs, memory_limit)
    check_device(job.train.device)
    state = StateDir.resolve(state_dir)
    times = KeyedFile(state.step_times)
    known = times.read()
    options = {"storage": storage, "priority": priority, "timeout_h": timeout, "force": force}
    options["step_times"] = None if no_estimate else known
    if not no_estimate and sys.stderr.isatty():
        click.echo("timing training steps for the estimate (--no-estimate skips this)…", err=True)
    rows = prepare_jobs(job, budgets, horizons, **options)
    if storage is not None:
        open_storage(storage)  # a bad URL or an unreachable server is refused now, not at claim time
    queue = Queue(state.create().queue_db)
    ids = queue.enqueue(rows, force=force)
    times.update(known)  # the step times measured for the estimate, kept once the jobs are queued
    if job.on_event is not None:
        note = f"{job_file} carries an on_event command ({job.on_event[:80]!r}): a daemon runs it only with "
        click.echo(f"note: {note}--allow-job-commands", err=True)
    queued = [
        {"id": i, "study": r["study_name"], "estimate": r["estimate"] and json.loads(r["estimate"])}
        for i, r in zip(ids, rows, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(queued, indent=2))
    for entry in [] if as_json else queued:
        timed = entry["estimate"] and Estimate.from_dict(entry["estimate"]).describe()
        click.echo(f"{entry['id']}\t{entry['study']}\t{timed or 'no estimate'}")


@cli.command()
@json_option
@click.option("--all", "show_all", is_flag=True, help="every job in the table, not just the first queued and last done")
@state_dir_option
@click.option("--storage", help="also every study on this shared storage, with each host's trials")
@wide_option
def status(as_json, show_all, state_dir, storage, wide) -> None:
    """Jobs, their progress and best results, and the machine."""
    state = StateDir.resolve(state_dir)
    data = collect(Queue(state.queue_db) if state.queue_db.exists() else None, storage, state.stop_file)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    width = table_width(console, wide)
    show_table(console, status_table(data, show_all, width))
    if data.get("hosts"):
        show_table(console, hosts_table(data["hosts"], width))
    console.print(machine_line(data), highlight=False, soft_wrap=True)
    for line in notice_lines(data):
        console.print(line, highlight=False, soft_wrap=True)


@cli.command()
@click.option("--until-idle", is_flag=True, help="exit 0 when no job is left")
@click.option("--window", help="run trials only between these hours, e.g. 22:00-07:00")
@click.option("--hang-timeout", type=FiniteRange(min=1, max=7 * 24 * 3600), default=900, show_default=True,
              help="seconds without progress after which a trial is killed and failed")  # fmt: skip
@click.option("--guard", "guard", multiple=True, metavar="KEY=VALUE",
              help="override a job's guard setting for every trial, e.g. cpu_temp_c=80 (repeatable)")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="trials run at once, each in its own worker")  # fmt: skip
@click.option("--devices", help="the workers' devices in turn, e.g. cuda:0,cuda:1 (default: each GPU, else the CPU)")
@click.option("--host", help="this host's name on a shared storage (default: $HPOD_HOST or the hostname)")
@click.option("--host-grace", type=FiniteRange(min=1, max=7 * 24 * 3600), default=600, show_default=True,
              help="seconds after which another host's silent trial is failed")  # fmt: skip
@click.option("--on-event", metavar="CMD", help="shell command run when a job ends or the guard pauses it (HPOD_* env)")
@click.option("--allow-job-commands", is_flag=True, help="also run the `on_event` command a job file carries")
@click.option("--outage-limit", type=FiniteRange(min=1, max=7 * 24 * 3600), default=OUTAGE_LIMIT_S, show_default=True,
              help="seconds a job waits for an unreachable storage (or a full disk) before it fails")  # fmt: skip
@state_dir_option
def daemon(until_idle, window, hang_timeout, guard, workers, devices, host, host_grace, on_event,
           allow_job_commands, outage_limit, state_dir) -> None:  # fmt: skip
    """Work through the queue (what systemd starts)."""
    from hpod.job import GuardSpec, guard_overrides
    from hpod.supervisor.daemon import Daemon, DaemonOptions
    from hpod.supervisor.liveness import HOST_VAR
    from hpod.supervisor.slots import check_devices, parse_devices
    from hpod.supervisor.window import Window

    quiet_optuna()
    run_window = None if window is None else Window.parse(window)
    guard_overrides(GuardSpec(), guard)  # a bad setting fails here, not in every trial
    if host is not None:
        os.environ[HOST_VAR] = host  # the workers inherit it
    slots = {"workers": workers, "devices": check_devices(parse_devices(devices)), "host_grace_s": host_grace}
    slots.update(on_event=on_event, allow_job_commands=allow_job_commands, outage_limit_s=outage_limit)
    options = DaemonOptions(until_idle=until_idle, window=run_window, hang_s=hang_timeout, guard=guard, **slots)
    sys.exit(Daemon(StateDir.resolve(state_dir).create(), options).run())


@cli.command()
@click.option("--next", "arm_next", is_flag=True, help="with no daemon running: make the next one stop as it starts")
@state_dir_option
def stop(arm_next, state_dir) -> None:
    """Ask the daemon to stop after the current step (writes STOP_HPO)."""
    state = StateDir.resolve(state_dir)
    alive = state.queue_db.exists() and collect(Queue(state.queue_db))["daemon_alive"]
    if not alive and not arm_next:
        raise HpodError(
            f"no daemon is running on {state.root}: nothing to stop (`hpod stop --next` makes the next daemon, "
            "such as the one systemd starts, stop at once)"
        )
    state.create().stop_file.touch()
    click.echo(f"wrote {state.stop_file}" + ("" if alive else " (no daemon is running; the next one will stop)"))


def job_control(action: str) -> None:
    @click.argument("job_id", type=JOB_ID)
    @state_dir_option
    def command(job_id, state_dir) -> None:
        outcome = Queue.existing(StateDir.resolve(state_dir)).request(job_id, action)
        click.echo(f"job {job_id}: {outcome}")

    command.__doc__ = JOB_ACTIONS[action]
    cli.command(name=action)(command)


JOB_ACTIONS = {
    "pause": "Pause a job; a running one stops at the next step and keeps its place.",
    "resume": "Put a paused job back in the queue.",
    "cancel": "Cancel a job; a running one stops at the next step.",
}
for _action in JOB_ACTIONS:
    job_control(_action)


def quiet_optuna() -> None:
    """Optuna's own INFO lines would repeat ours; its warnings go through our handler."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def setup_logging() -> None:
    """Rich's handler on a terminal, every line with its date and time; plain timestamped lines
    for a pipe or the journal, which rich would pad to the console's width."""
    if console.is_terminal:
        handler = RichHandler(
            console=console, show_path=False, markup=False, log_time_format=TERMINAL_TIME, omit_repeated_times=False
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = plain_handler(sys.stdout)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("hpod").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command, turning expected failures into one line and an exit code."""
    os.umask(PRIVATE_UMASK)  # the owner's alone (0600) until StateDir.resolve sees a group-shared folder
    setup_logging()
    try:
        code = cli.main(args=argv, prog_name="hpod", standalone_mode=False)
    except SystemExit as exc:  # a command's own exit status (daemon, grid --verify)
        return 0 if exc.code is None else int(exc.code)
    except HpodError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return 2
    except (click.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        return 130
    except Exception as exc:
        if is_unreachable(exc):  # a full disk, a lock held past the timeout, a server away: nothing was changed
            click.echo(f"Error: {root_error(exc)}{f' ({OPENED[-1]})' if OPENED else ''}; try again", err=True)
            return 2
        if not (is_damage(exc) and OPENED):
            raise
        click.echo(f"Error: {damaged(OPENED[-1], 'cannot be read')}", err=True)  # the file opened last
        return 2
    return code if isinstance(code, int) else 0


import hpod.cli_jobs  # noqa: E402 - registers show, log and plan on `cli`
import hpod.cli_service  # noqa: E402 - registers service and doctor on `cli`
import hpod.cli_studies  # noqa: E402, F401 - registers grid, report, export and import on `cli`
