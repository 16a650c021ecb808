"""The commands that look after the state directory and the service around it: `service` (the
daemon under systemd) and `doctor` (damaged files and backups). They register on the `cli` group
of base.py; main.py imports this module."""

from __future__ import annotations

from pathlib import Path

import click

from hpod.cli.base import cli, state_dir_option
from hpod.errors import HpodError
from hpod.state import StateDir


@cli.command()
@click.option("--restore", is_flag=True, help="put back the newest backup that passes for each damaged database")
@state_dir_option
def doctor(restore, state_dir) -> None:
    """Check the state directory's files; exit 2 if damaged.

    Every database, checkpoint and samples file; --restore puts back a database's newest backup
    that passes.

    \b
    Example:
      hpod doctor --restore
    """
    from hpod.supervisor.backup import backups_dir, examine
    from hpod.supervisor.backup import restore as put_back

    state = StateDir.resolve(state_dir)
    found = examine(state)
    left = []
    for path, what in found:
        used = put_back(state, path) if restore and path.suffix == ".db" else None
        if used is not None:
            click.echo(f"{path} {what}: restored from {used.name} (the damaged file is kept beside it)")
        else:
            left.append(path)
            hint = "" if path.suffix != ".db" else f" (backups: {backups_dir(state)}; --restore puts one back)"
            click.echo(f"{path} {what}{'; no backup passes its check' if restore and path.suffix == '.db' else hint}")
    if not found:
        click.echo(f"{state.root}: every database, checkpoint and samples file is sound")
    if left:
        raise HpodError(f"{len(left)} damaged file(s) in {state.root}")


@cli.group()
def service() -> None:
    """The daemon as a systemd service.

    The user's own (default) or the machine's (--system).

    \b
    Examples:
      hpod service install
      hpod service status
    """


system_option = click.option("--system", is_flag=True, help="the machine's service (as root), not your user service")


@service.command(name="install")
@system_option
@click.option("--state-dir", type=click.Path(file_okay=False), help="default: the CLI's (system: /var/lib/hpod)")
@click.option("--service-user", help="the system service's account (default: hpod, created when missing)")
def service_install(system, state_dir, service_user) -> None:
    """Write the unit and start the service.

    It records the state directory, so that the CLI reads the queue the service runs.

    \b
    Example:
      hpod service install
    """
    from hpod.supervisor.service import install

    for line in install(system, None if state_dir is None else Path(state_dir), service_user):
        click.echo(line)


@service.command(name="status")
def service_status() -> None:
    """The installed services and whether they run.

    Unit, executable, state directory, running or not, lingering.

    \b
    Example:
      hpod service status
    """
    from hpod.supervisor.service import status_lines

    for line in status_lines():
        click.echo(line)


@service.command(name="uninstall")
@system_option
def service_uninstall(system) -> None:
    """Stop the service and remove its unit.

    The state directory is kept.

    \b
    Example:
      hpod service uninstall
    """
    from hpod.supervisor.service import uninstall

    for line in uninstall(system):
        click.echo(line)
