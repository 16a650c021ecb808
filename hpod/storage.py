"""Optuna storages: opening one (SQLite in the state directory, or a shared server's URL),
telling an outage (a server restarting, a full disk, a lock held) from a bad request, and a URL
as output may show it."""

from __future__ import annotations

import fcntl
import re
from pathlib import Path

from hpod.errors import HpodError
from hpod.state import SQLITE_TIMEOUT_S, DamagedError, check_database, damaged, match_umask, read_only_uri


class StorageUnreachable(HpodError):
    """A storage that cannot be reached or written for now (see is_unreachable); a job waits it
    out (supervisor/outage.py), a command that only reads says so and goes on."""


TRANSIENT_SQLITE = ("locked", "busy", "disk is full", "readonly", "disk i/o error", "unable to open")


def is_unreachable(exc: BaseException) -> bool:
    """Whether an error is the storage being away rather than the request being wrong."""
    return isinstance(exc, StorageUnreachable) or unreachable_cause(exc) is not None


def unreachable_cause(exc: BaseException) -> BaseException | None:
    """The driver's error that makes `exc` an outage: an OperationalError or InterfaceError
    (PostgreSQL restarting, a closed connection, a refused socket), or SQLite busy past its
    timeout, out of disk or read-only. Optuna and SQLAlchemy wrap the driver's error, so the
    chain is searched; None for any other error."""
    import sqlite3

    seen: BaseException | None = exc
    for _ in range(8):  # the chains met here are 2 to 4 deep; a cycle must not hang us
        if seen is None:
            return None
        if isinstance(seen, sqlite3.OperationalError):
            return seen if any(word in str(seen).lower() for word in TRANSIENT_SQLITE) else None
        kind = type(seen)
        if kind.__name__ in ("OperationalError", "InterfaceError") and not kind.__module__.startswith("sqlalchemy"):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def open_storage(url: str, create: bool = True):
    """An Optuna storage for a URL; SQLite gets a busy timeout so concurrent readers wait.

    Opening creates Optuna's tables on first use, and two processes doing that at once make
    one fail ("table studies already exists"), so SQLite creations are serialised by a file lock.
    A command that only reads passes create=False: it creates no file, lock file or table."""
    import optuna  # here, so that commands that never open a study start fast

    if not url.startswith("sqlite:///"):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})  # after a restart
        except Exception as exc:  # SQLAlchemy's URL, driver and connection errors share no base
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            error = StorageUnreachable if is_unreachable(exc) else HpodError
            raise error(f"storage {shown_url(url)!r} cannot be opened ({type(exc).__name__}: {first[:200]})") from None
    path = Path(url.removeprefix("sqlite:///"))
    if not create and not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise HpodError(f"storage {shown_url(url)}: {path} {what}")
    check_database(path)
    if (read_only := read_only_uri(path)) is not None:  # its tables are there: no lock to take
        return sqlite_storage(f"sqlite:///{read_only}&uri=true", path, create=False)
    if not create:
        return opened_while_not_created(url, path)
    with Path(f"{path}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        created = not path.exists()
        storage = sqlite_storage(url, path, create=True)
        if created:
            match_umask(path)
        return storage


def opened_while_not_created(url: str, path: Path):
    """A reader's opening waits out a creation under way (the creator's lock, shared here): Optuna
    stamps its schema version when it finds tables without one, so a reader opening between the
    creator's tables and its stamp writes the stamp too, and the creator fails on it."""
    lock_path = Path(f"{path}.lock")
    if not lock_path.is_file():
        return sqlite_storage(url, path, create=False)
    with lock_path.open("r") as lock:  # read-only: a read-only state directory is read too
        fcntl.flock(lock, fcntl.LOCK_SH)
        return sqlite_storage(url, path, create=False)


def sqlite_storage(url: str, path: Path, create: bool):
    import optuna

    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}}, skip_table_creation=not create
        )
        if not create:
            storage.get_all_studies()  # a database without Optuna's tables fails here, in one line
        return storage
    except Exception as exc:  # SQLAlchemy's DatabaseError over sqlite3's: a damaged page, a bad schema
        said = f"{exc} {exc.__cause__} {exc.__context__}"
        if "malformed" in said or "not a database" in said:
            raise DamagedError(damaged(path, "cannot be read")) from None
        if "no such table" in said:
            raise HpodError(f"{path} holds no Optuna studies") from None
        raise


SECRET_WORDS = ("pass", "pwd", "secret", "token", "key")  # query parameters whose value is masked


def shown_url(url: str) -> str:
    """The URL as output may show it: a password in its user-info, and the value of any query
    parameter that names a secret (`?password=…`, `sslpassword`, `token`), masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:  # not a URL SQLAlchemy can parse: mask what looks like user-info all the same
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)
    secret = [key for key in parsed.query if any(word in key.lower() for word in SECRET_WORDS)]
    query = {**parsed.query, **dict.fromkeys(secret, "***")}
    return parsed.set(query=query).render_as_string(hide_password=True)
