"""The state directory: where everything hpod writes lives, and the Optuna storage in it."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hpod.errors import HpodError

ENV_VAR = "HPOD_HOME"
SYSCONFDIR_VAR = "HPOD_SYSCONFDIR"  # where the system service's record lives (default /etc; tests move it)
RECORD_NAME = "state_dir"  # one line: the state directory a service installed by `hpod service install` uses
SQLITE_TIMEOUT_S = 30  # readers such as `hpod status` must wait out a writer, not fail
CREATING_S = 10.0  # a 0-byte database younger than this is being created, not damaged
GROWING_S = 2.0  # a database shorter than its header says for longer than this is truncated, not growing
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a write that waits for space rather than failing the trial
FULL_BELOW = 1 << 20  # a write that failed with less free space than this ran out of it
PRIVATE_UMASK = 0o077  # files the owner's alone (0600), directories 0700
GROUP_UMASK = 0o007  # in a group-shared state directory (setgid, group-writable): the group's too


def user_record() -> Path:
    """Where `hpod service install` (the user service) records its state directory."""
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "hpod" / RECORD_NAME


def system_record() -> Path:
    """Where `hpod service install --system` records the system service's state directory."""
    return Path(os.environ.get(SYSCONFDIR_VAR) or "/etc") / "hpod" / RECORD_NAME


def default_root() -> Path:
    """The per-user state directory, $XDG_STATE_HOME/hpod (~/.local/state/hpod): the same folder
    as systemd's %S/hpod for a user service, so the CLI and the user service share one queue."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "hpod"


def recorded_root() -> Path | None:
    """The state directory an installed service uses: the user's own service first, else the
    system service's; None when no service was installed."""
    for record in (user_record(), system_record()):
        try:
            text = record.read_text().strip()
        except OSError:
            continue
        if text:
            return Path(text)
    return None


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def resolve(cls, option: str | Path | None = None) -> StateDir:
        """`--state-dir`, else $HPOD_HOME, else the installed service's state directory, else the
        per-user default: so that `hpod enqueue` from any folder fills the queue the service reads.

        It also sets the process umask from the directory: a group-shared one (setgid and
        group-writable, as `hpod service install --system` makes it) gets files its group can
        read and write, so the service and its group's members can use each other's files."""
        chosen = option if option is not None else os.environ.get(ENV_VAR) or recorded_root() or default_root()
        state = cls(Path(chosen).expanduser().absolute())
        state.check_access()
        os.umask(GROUP_UMASK if state.group_shared() else PRIVATE_UMASK)
        return state

    def check_access(self) -> None:
        """One line naming the folder and the fix, for a state directory this user may not use
        (a system service's, without being in its group), rather than a traceback or an empty
        status that looks like an empty queue."""
        try:
            self.root.stat()
        except FileNotFoundError:
            return  # created when first written
        except OSError as exc:
            raise HpodError(f"state directory {access_problem(self.root, exc)}") from None
        if self.root.is_dir() and not os.access(self.root, os.R_OK | os.X_OK):
            denied = PermissionError(errno.EACCES, "permission denied")
            raise HpodError(f"state directory {access_problem(self.root, denied)}")

    def group_shared(self) -> bool:
        try:
            mode = self.root.stat().st_mode
        except OSError:
            return False
        return bool(mode & stat.S_ISGID and mode & stat.S_IWGRP)

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def queue_db(self) -> Path:
        return self.root / "queue.db"

    @property
    def stop_file(self) -> Path:
        return self.root / "STOP_HPO"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def micro_batches(self) -> Path:
        """Micro-batch choices per architecture, device and data shape (see probe.ChoiceCache)."""
        return self.root / "micro_batches.json"

    @property
    def step_times(self) -> Path:
        """Seconds per training step per architecture, device and data (see study/estimate.py)."""
        return self.root / "step_times.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tracebacks(self) -> Path:
        """The full traceback of each trial or worker that raised (`hpod show` names the file)."""
        return self.logs / "tracebacks"

    def refuse_links(self, study: str) -> None:
        """Before a study's first write: none of the paths it writes or deletes is a planted link."""
        for folder, name in ((self.logs, f"{study}.log"), (self.checkpoints, study), (self.tracebacks, None)):
            refuse_link(folder)
            if name is not None:
                refuse_link(folder / name)

    def create(self) -> StateDir:
        """Make the directory tree; what hpod creates is private to its owner (0700), or its group's
        too (0770) in a group-shared directory; a directory that was there
        keeps its mode (a shared 1777 directory must stay shared)."""
        mode = 0o770 if self.group_shared() else 0o700
        for path in (self.root, self.logs, self.checkpoints, self.tracebacks):
            try:
                path.mkdir(mode=mode, parents=True, exist_ok=True)
            except OSError as exc:
                raise HpodError(f"state directory {path}: cannot be created ({exc.strerror or exc})") from None
        return self

    def storage_url(self, override: str | None = None) -> str:
        return override if override is not None else f"sqlite:///{self.optuna_db}"


NOT_REGULAR = "is not a regular file (a FIFO, a device or a socket)"


def check_database(path: Path) -> None:
    """Refuse a database file that is there but cannot be one: a 0-byte file (SQLite would
    silently start an empty database over a queue or a study) or one without SQLite's header.

    Only before this process first opens the file: closing any descriptor of a file drops every
    POSIX lock the process holds on it, SQLite's included, and another process closing its own
    connection would then delete the write-ahead log this one still writes to."""
    if path in OPENED:
        return
    OPENED.append(path)  # before the checks: a file created by this open is this process's too
    read = read_header(path)
    if read is None:
        return
    header, info = read
    if not header and time.time() - info.st_mtime < CREATING_S:
        return  # another process created it a moment ago and has yet to write its first page
    if not header:
        raise DamagedError(damaged(path, "is empty (0 bytes)"))
    if header[:16] != b"SQLite format 3\x00":  # a file named by mistake (--storage sqlite:////etc/passwd) or damage
        raise DamagedError(f"{path} is not an SQLite database: name another file, or if hpod wrote it, {FIX}")
    deadline = time.monotonic() + GROWING_S
    while (short := missing_bytes(header, info.st_size)) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # a checkpoint writes the header's page before the pages that grow the file
        read = read_header(path)
        if read is None:
            return
        header, info = read
    if short is not None:
        raise DamagedError(damaged(path, f"is truncated ({info.st_size:,} of {short:,} bytes)"))


def read_header(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The file's first 100 bytes and its size after reading them (so the size is no older than
    the header); None when it is not there or cannot be read (the open that follows says why)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the open below, and SQLite's
            what = "is a directory" if stat.S_ISDIR(info.st_mode) else NOT_REGULAR
            raise DamagedError(f"{path} {what}: an SQLite database is a file; move it away")
        with path.open("rb") as f:
            header = f.read(100)
            return header, os.fstat(f.fileno())
    except OSError:
        return None


def missing_bytes(header: bytes, size: int) -> int | None:
    """The size the header says the file has, when the file is shorter; else None."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size  # how SQLite writes 65536 in two bytes
    pages = int.from_bytes(header[28:32], "big")  # valid while the change counters agree
    return pages * page_size if header[24:28] == header[92:96] and pages * page_size > size else None


OPENED: list[Path] = []  # the SQLite files this process opened, to name one an error finds damaged


class DamagedError(HpodError):
    """A database of the state directory is damaged: nothing may write over it."""


def is_damage(exc: BaseException) -> bool:
    """A damaged SQLite file met mid-query: sqlite3's plain DatabaseError, or SQLAlchemy's over it."""
    import sqlite3

    return isinstance(exc, DamagedError) or type(getattr(exc, "orig", exc)) is sqlite3.DatabaseError


FIX = "`hpod doctor` checks the state directory, `hpod doctor --restore` puts back a backup"


def damaged(path: Path, what: str) -> str:
    """The one line for a damaged database: what is wrong with which file, and the way back."""
    return f"{path} {what}: damaged; {FIX}"


def read_only_uri(path: Path) -> str | None:
    """An SQLite URI that reads `path` without writing, for a database this process may not
    write (a read-only mount, a colleague's state directory); None when it may. Reading a WAL
    database needs its -shm file: with one there (a daemon is running), `mode=ro` shares it;
    without (the daemon ended), nothing can change the file, so it is read as immutable."""
    if not path.exists() or writable_problem(path) is None:
        return None
    how = "mode=ro" if Path(f"{path}-shm").exists() else "immutable=1"
    return f"file:{urllib.parse.quote(str(path))}?{how}"


def writable_problem(path: Path) -> str | None:
    """Why this process may not write the database `path` (or its folder, where SQLite keeps
    its journal), or None."""
    for candidate in (path, path.parent):
        if not os.access(candidate, os.W_OK):
            statvfs = os.statvfs(candidate)
            return "read-only file system" if statvfs.f_flag & os.ST_RDONLY else f"{candidate} is not writable"
    return None


def regular_file(path: Path, what: str, max_bytes: int, raise_it: str = "") -> int:
    """The size of `path`, which must be a regular file of at most `max_bytes`; else one line
    naming what is wrong (a FIFO would block the reader, /dev/zero never end)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise HpodError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise HpodError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise HpodError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise HpodError(f"{what} {path} {NOT_REGULAR}")
    if info.st_size > max_bytes:
        limit = f"{max_bytes / 2**20:,.0f} MiB"
        raise HpodError(f"{what} {path} is {info.st_size / 2**20:,.0f} MiB, over the limit of {limit}{raise_it}")
    return info.st_size


def refuse_link(path: Path) -> Path:
    """`path`, unless it is a symbolic link: hpod writes and deletes only what it made, and a link
    planted in the state directory would send a trial's files, or their deletion, elsewhere."""
    if path.is_symlink():
        raise HpodError(f"{path} is a symbolic link (to {os.readlink(path)}); hpod writes only what it made: remove it")
    return path


def open_no_follow(path: Path, flags: int) -> int:
    """os.open that refuses a symbolic link in the last component (ELOOP), does not wait on a
    FIFO planted in a file's place (ENXIO for a writer with no reader), and creates files with
    the mode the umask allows."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)


def match_umask(path: Path) -> None:
    """SQLite creates its files 0644 whatever the umask allows; give a file hpod just created the
    mode the umask does allow (0660 in a group-shared state directory, 0600 otherwise)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def access_problem(path: Path, exc: BaseException) -> str:
    """One line on why `path` cannot be used, and the fix: a state directory of a service whose
    group this user is not in says which group to join."""
    import grp

    reason = getattr(exc, "strerror", None) or str(exc)
    for candidate in (path, *path.parents):
        try:
            info = candidate.stat()
        except OSError:
            continue
        if os.access(candidate, os.R_OK | os.W_OK | (os.X_OK if candidate.is_dir() else 0)):
            continue
        try:
            group = grp.getgrgid(info.st_gid).gr_name
        except KeyError:
            group = str(info.st_gid)
        mode = stat.filemode(info.st_mode)
        if info.st_gid not in os.getgroups() and info.st_mode & stat.S_IRWXG:
            fix = f"join its group: sudo usermod -aG {group} $USER, then log in again"
        else:
            fix = "ask its owner for access, or use another state directory (--state-dir or $HPOD_HOME)"
        return f"{path}: {reason} ({candidate} is {mode}, group {group}); {fix}"
    return f"{path}: {reason}"


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a temp file beside `path`, fsync it, rename it over `path`, fsync the directory."""
    path.parent.mkdir(mode=0o770, parents=True, exist_ok=True)  # the group's only where the umask allows (state.py)
    refuse_link(path.parent)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(open_no_follow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        full = shutil.disk_usage(path.parent).free < FULL_BELOW  # before the partial file goes
        tmp.unlink(missing_ok=True)
        if full and not (isinstance(exc, OSError) and exc.errno in DISK_FULL):  # torch says "unexpected pos"
            raise OSError(errno.ENOSPC, f"no space left on device writing {path}") from exc
        raise
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a power cut
    finally:
        os.close(directory)
