"""The commands that fill the queue and work through it: run, enqueue, status, daemon, stop,
pause, resume and cancel."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click
from rich.table import Table

from hpod.cli.base import (
    FiniteRange,
    cli,
    complete_jobs,
    console,
    err_console,
    job_argument,
    json_option,
    load_request,
    quiet_optuna,
    state_dir_option,
    study_options,
    timeout_option,
    wide_option,
)  # fmt: skip
from hpod.errors import HpodError
from hpod.state import StateDir
from hpod.status_display import status_view, watched
from hpod.storage import open_storage
from hpod.supervisor.outage import OUTAGE_LIMIT_S
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import JobState
from hpod.supervisor.status import collect
from hpod.tables import show as show_table
from hpod.tables import table_width


@cli.command()
@study_options
@timeout_option
def run(budget, horizon, trials, max_epochs, job_file, data, memory_limit, state_dir, storage, no_ladder,
        timeout) -> None:  # fmt: skip
    """Run studies now, in the foreground.

    One after another, as the daemon would (each trial in its own worker; STOP_HPO, the guard and
    memory as the daemon's), from a private queue.

    \b
    Example:
      hpod run --budget 20K --horizon h1 --job jobs/tiny.yaml --trials 4
    """
    from hpod.display import RunProgress
    from hpod.supervisor.daemon import Daemon, DaemonOptions
    from hpod.supervisor.enqueue import prepare_jobs

    quiet_optuna()
    request = (budget, horizon, job_file, data, trials, max_epochs, memory_limit, no_ladder)
    job, budgets, horizons = load_request(*request)
    rows = prepare_jobs(job, budgets, horizons, storage=storage, timeout_h=timeout)  # all checked before writing
    state = StateDir.resolve(state_dir).create()
    path = state.root / f"run-{os.getpid()}.db"  # `hpod status` and the daemons never see these jobs
    queue = Queue(path)
    try:
        queue.enqueue(rows)
        with RunProgress(console) as progress:
            code = Daemon(state, DaemonOptions(until_idle=True, queue_path=path, on_report=progress.on_report)).run()
        ended = queue.jobs()
    finally:
        queue.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    sys.exit(show_run(state, storage, ended) or code)


def show_run(state: StateDir, storage: str | None, ended: list) -> int:
    """Each study's trials and test loss; 1 when a study did not finish (its reason said)."""
    from hpod.display import trials_table
    from hpod.records import BASELINES, TEST_EVALUATION
    from hpod.study.plan import load_named_study

    unfinished = 0
    for job in ended:
        if job.trials_finished or job.state == JobState.DONE:
            study = load_named_study(job.study_name, state, storage)
            show_table(console, trials_table(study, table_width(console)))
            tested = study.user_attrs.get(TEST_EVALUATION)
            baselines = study.user_attrs.get(BASELINES, {})
            if tested is not None:  # beside every baseline's on the same test split
                levels = ", ".join(f"{name} {v['test_loss']:.4f}" for name, v in baselines.items())
                beside = f" (baselines: {levels})" if levels else ""
                loss = f"test loss {tested['test_loss']:.4f}{beside}"
                console.print(f"{job.study_name}: best trial {tested['trial']} {loss}")
        if job.state != JobState.DONE:
            unfinished = 1
            why = job.last_error or job.last_failure or "stopped before it finished; the same command resumes it"
            click.echo(f"{job.study_name}: {job.state} ({why})", err=True)
    return unfinished


@cli.command()
@study_options
@click.option(
    "--priority", type=click.IntRange(-(10**9), 10**9), default=0, show_default=True, help="higher runs first"
)
@timeout_option
@click.option(
    "--force",
    is_flag=True,
    help="queue even if the same study is already queued or running, no architecture fits this machine's "
    "memory, or the study is estimated to run past search.max_days",
)
@click.option(
    "--no-estimate", is_flag=True, help="queue without timing training steps here (a study for another machine)"
)
@click.option("--after", metavar="JOB", shell_complete=complete_jobs,
              help="wait until this job (id or study name) has ended")  # fmt: skip
@json_option
def enqueue(
    budget, horizon, trials, max_epochs, job_file, data, memory_limit, state_dir, storage, no_ladder, priority,
    timeout, force, no_estimate, after, as_json,
) -> None:  # fmt: skip
    """Queue a study per budget × horizon.

    Checks all of them first and times training steps here; prints the job ids and how long each
    should take. Several budgets form a ladder: each waits for the search below and starts from its
    best (--no-ladder: independent studies).

    \b
    Examples:
      hpod enqueue --budget 2M --horizon h1
      hpod enqueue --budget 2M,20M,200M --horizon h1,h5 --after 3
    """
    from hpod.keyed_file import KeyedFile
    from hpod.supervisor.enqueue import complete_studies, prepare_jobs
    from hpod.supervisor.history import measured_calibration
    from hpod.trial.device import check_device, pick_device

    request = (budget, horizon, job_file, data, trials, max_epochs, memory_limit, no_ladder)
    job, budgets, horizons = load_request(*request)
    check_device(job.train.device)
    state = StateDir.resolve(state_dir)
    waits_for = None if after is None else Queue.existing(state).find(after).id  # refused before any timing
    times = KeyedFile(state.step_times)
    known = times.read()
    options = {"storage": storage, "priority": priority, "timeout_h": timeout, "force": force}
    options["step_times"] = None if no_estimate else known
    if not no_estimate:
        options["calibration"] = measured_calibration(state, job.name, pick_device(job.train.device))
    complete = complete_studies(job, budgets, horizons, state.storage_url(storage))
    for name, count in complete.items():
        click.echo(f"note: {name} is already complete ({count}/{job.search.n_trials} trials): not queued; "
                   f"`hpod report` has its result, and --trials above {count} extends it", err=True)  # fmt: skip
    with timing_status(not no_estimate) as announce:
        rows = prepare_jobs(job, budgets, horizons, skip=complete, announce=announce, **options)
    if not rows:
        return
    if storage is not None:
        open_storage(storage)  # a bad URL or an unreachable server is refused now, not at claim time
    queue = Queue(state.create().queue_db)
    ids = queue.enqueue(rows, force=force, after=waits_for)
    if not no_estimate:
        times.update(known)  # the step times measured for the estimate, kept once the jobs are queued
    if job.on_event is not None:
        note = f"{job_file} carries an on_event command ({job.on_event[:80]!r}): a daemon runs it only with "
        click.echo(f"note: {note}--allow-job-commands", err=True)
    queued = [queue.job(i) for i in ids]
    if as_json:
        shown = [{"id": j.id, "study": j.study_name, "estimate": j.estimate and j.estimate.as_dict()} for j in queued]
        click.echo(json.dumps(shown, indent=2))
    for j in [] if as_json else queued:
        click.echo(f"{j.id}\t{j.study_name}\t{'no estimate' if j.estimate is None else j.estimate.describe()}")
        for note in () if j.estimate is None else (j.estimate.rests_on, *j.estimate.notes):
            click.echo(f"note: {j.study_name}: {note}", err=True)


@contextlib.contextmanager
def timing_status(timing: bool):
    """On a terminal, a status line saying what enqueue is timing while it times; else nothing."""
    from hpod.study.estimate import TIMING_LIMIT_S

    if not timing or not err_console.is_terminal:
        yield None
        return
    limit = f"at most {TIMING_LIMIT_S:.0f} s and an eighth of the memory limit; --no-estimate skips this"
    with err_console.status(f"timing training steps for the estimate ({limit})") as shown:
        yield shown.update


@cli.command()
@json_option
@click.option("--all", "show_all", is_flag=True, help="every job in the table, not just the first queued and last done")
@state_dir_option
@click.option("--storage", help="also every study on this shared storage, with each host's trials")
@wide_option
@click.option("--watch", type=FiniteRange(min=0.2, max=24 * 3600), is_flag=False, flag_value=2.0, metavar="[SECONDS]",
              help="redraw in place every SECONDS (default 2) until Ctrl-C")  # fmt: skip
def status(as_json, show_all, state_dir, storage, wide, watch) -> None:
    """Jobs, their progress and best results, and the machine.

    \b
    Examples:
      hpod status
      hpod status --watch 5
      hpod status --all --json
    """
    state = StateDir.resolve(state_dir)

    def read() -> dict:
        return collect(Queue(state.queue_db) if state.queue_db.exists() else None, storage, state.stop_file)

    if watch is not None:
        if as_json or not console.is_terminal:
            raise HpodError("--watch redraws a terminal: without it, status prints once (for a pipe or --json)")
        watch_status(read, show_all, wide, watch)
        return
    data = read()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for part in status_view(data, show_all, table_width(console, wide)):
        if isinstance(part, Table):
            show_table(console, part)
        else:
            console.print(part, highlight=False, soft_wrap=True)


def watch_status(read, show_all: bool, wide: bool, every_s: float) -> None:
    """Redraw the status in place (rich Live) at the terminal's width, as it is at each redraw."""
    import time

    from rich.live import Live

    def view():
        return watched(read(), show_all, None if wide else console.width, every_s)

    with Live(view(), console=console, auto_refresh=False, redirect_stdout=False) as live:
        try:
            while True:
                time.sleep(every_s)
                live.update(view(), refresh=True)
        except KeyboardInterrupt:
            pass


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
    """Work through the queue (what systemd starts).

    \b
    Examples:
      hpod daemon --until-idle
      hpod daemon --window 22:00-07:00
    """
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
    """Ask the daemon to stop after the current step.

    It writes STOP_HPO in the state directory; the running job stays resumable.

    \b
    Example:
      hpod stop
    """
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
    @job_argument()
    @state_dir_option
    def command(job, state_dir) -> None:
        queue = Queue.existing(StateDir.resolve(state_dir))
        job_id = queue.find(job).id
        click.echo(f"job {job_id}: {queue.request(job_id, action)}")

    first, rest = JOB_ACTIONS[action]
    command.__doc__ = f"{first}\n\n{rest}\n\n\b\nExample:\n  hpod {action} 3"
    cli.command(name=action)(command)


JOB_ACTIONS = {
    "pause": ("Pause a job until `hpod resume`.", "A running one stops at the next step and keeps its place."),
    "resume": ("Put a paused job back in the queue.", "It resumes where it stopped, at the next daemon's claim."),
    "cancel": ("Cancel a job.", "A running one stops at the next step; `hpod retry` puts it back."),
}
for _action in JOB_ACTIONS:
    job_control(_action)
