"""The commands that change jobs no daemon holds: retry, edit, remove and clean. They register on
the `cli` group of base.py; main.py imports this module."""

from __future__ import annotations

import sys

import click

from hpod.cli.base import COUNT, cli, job_argument, quiet_optuna, state_dir_option, timeout_option
from hpod.errors import HpodError
from hpod.state import StateDir
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import QueuedJob

PRIORITY = click.IntRange(-(10**9), 10**9)


def studies_options(command):
    command = click.option("--yes", "-y", is_flag=True, help="delete the studies without asking")(command)
    return click.option(
        "--studies", is_flag=True, help="also delete their studies, seed studies, checkpoints and trial logs"
    )(command)


@cli.command()
@job_argument()
@click.option("--trials", type=COUNT, help="finished trials to reach (a done job: more than it has)")
@state_dir_option
def retry(job, trials, state_dir) -> None:
    """Put an ended job back in the queue.

    A failed, cancelled or interrupted job resumes its study where it stopped, with its settings;
    a done one is retried only with --trials above its count, which extends its study.

    \b
    Examples:
      hpod retry 3
      hpod retry tiny-2M-h1 --trials 40
    """
    from hpod.supervisor.edits import retry as retry_job

    queue = Queue.existing(StateDir.resolve(state_dir))
    retried = retry_job(queue, queue.find(job).id, trials)
    click.echo(f"job {retried.id} {retried.study_name}: queued, {retried.trials_finished}/{retried.target} trials")


@cli.command()
@job_argument()
@click.option("--priority", type=PRIORITY, help="higher runs first")
@click.option("--trials", type=COUNT, help="finished trials per study")
@timeout_option
@state_dir_option
def edit(job, priority, trials, timeout, state_dir) -> None:
    """Change a waiting job's priority, trials or timeout.

    A queued, paused or interrupted job; a running one is refused (`hpod pause` it first).

    \b
    Example:
      hpod edit 4 --priority 10 --trials 30
    """
    from hpod.supervisor.edits import Edit
    from hpod.supervisor.edits import edit as edit_job

    queue = Queue.existing(StateDir.resolve(state_dir))
    change = Edit(priority=priority, trials=trials, timeout_s=None if timeout is None else timeout * 3600)
    edited = edit_job(queue, queue.find(job).id, change)
    timeout_h = "none" if edited.timeout_s is None else f"{edited.timeout_s / 3600:g} h"
    click.echo(f"job {edited.id}: priority {edited.priority}, {edited.target} trials, timeout {timeout_h}")


@cli.command()
@job_argument("jobs", many=True)
@studies_options
@state_dir_option
def remove(jobs, studies, yes, state_dir) -> None:
    """Take jobs out of the queue; their studies stay.

    A running job is refused. --studies also deletes their studies, seed studies, checkpoints and
    trial logs, after asking.

    \b
    Examples:
      hpod remove 3 4
      hpod remove tiny-2M-h1 --studies
    """
    from hpod.supervisor.edits import remove as remove_jobs

    state = StateDir.resolve(state_dir)
    queue = Queue.existing(state)
    found = [queue.find(ref) for ref in jobs]
    confirm_deletion(found, studies, yes)
    removed = remove_jobs(queue, [j.id for j in found])
    report(state, queue, removed, studies)


@cli.command()
@studies_options
@state_dir_option
def clean(studies, yes, state_dir) -> None:
    """Take every ended job out of the queue.

    Done, failed and cancelled jobs leave; their studies stay unless --studies (asked first).

    \b
    Example:
      hpod clean
    """
    from hpod.supervisor.edits import clean as clean_jobs
    from hpod.supervisor.rows import ENDED

    state = StateDir.resolve(state_dir)
    queue = Queue.existing(state)
    confirm_deletion([j for j in queue.jobs() if j.state in ENDED], studies, yes)
    report(state, queue, clean_jobs(queue), studies)


def confirm_deletion(jobs: list[QueuedJob], studies: bool, yes: bool) -> None:
    """Ask before any study is deleted: a study is days of compute."""
    if not studies or yes or not jobs:
        return
    names = ", ".join(sorted({j.study_name for j in jobs}))
    if not sys.stdin.isatty():
        raise HpodError(f"--studies deletes {names} for good: answer on a terminal, or add --yes")
    if not click.confirm(f"delete the studies {names}, their seed studies and checkpoints for good?"):
        click.echo("nothing removed", err=True)
        sys.exit(1)


def report(state: StateDir, queue: Queue, removed: list[QueuedJob], studies: bool) -> None:
    """Say what left the queue, then delete the studies no job left in the queue still names."""
    from hpod.storage import open_storage
    from hpod.study.deletion import delete_study

    if not removed:
        click.echo("no job to remove")
        return
    click.echo(f"removed job{'s' if len(removed) > 1 else ''} {', '.join(str(j.id) for j in removed)}")
    if not studies:
        return
    quiet_optuna()
    left = {(j.storage, j.study_name): j.id for j in queue.jobs()}
    kept = set(left)
    for key in sorted({(j.storage, j.study_name) for j in removed} & kept, key=str):
        click.echo(f"kept study {key[1]}: job {left[key]} still runs it")
    for storage, name in sorted({(j.storage, j.study_name) for j in removed} - kept, key=str):
        try:
            deleted = delete_study(state, open_storage(state.storage_url(storage), create=False), name)
        except HpodError as exc:
            raise HpodError(f"study {name}: not deleted ({exc})") from None
        click.echo(f"deleted {', '.join(deleted) or f'nothing: no study {name}'}")
