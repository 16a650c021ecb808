"""The entry point: the command runs, and an expected failure prints one line and exits 2."""

from __future__ import annotations

import logging
import os
import sys

import click
from rich.logging import RichHandler

import hpod.cli.edits
import hpod.cli.jobs
import hpod.cli.queue
import hpod.cli.service
import hpod.cli.studies  # noqa: F401 - the command modules register their commands on `cli`
from hpod.cli.base import cli, console
from hpod.errors import HpodError
from hpod.logs import TERMINAL_TIME, plain_handler
from hpod.state import OPENED, PRIVATE_UMASK, damaged, is_damage
from hpod.storage import is_unreachable
from hpod.supervisor.outage import root_error


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
