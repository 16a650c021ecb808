"""The state directory: where everything hpod writes lives, and the Optuna storage in it."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from hpod.errors import HpodError

ENV_VAR = "HPOD_HOME"
SQLITE_TIMEOUT_S = 30  # readers such as `hpod status` must wait out a writer, not fail


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def resolve(cls, option: str | Path | None = None) -> StateDir:
        """`--state-dir`, else $HPOD_HOME, else ./state."""
        chosen = option if option is not None else os.environ.get(ENV_VAR) or "state"
        return cls(Path(chosen).expanduser().absolute())

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

    def create(self) -> StateDir:
        """Make the directory tree; what hpod creates is private to its owner (0700), a directory
        that was there keeps its mode (a shared 1777 directory must stay shared)."""
        for path in (self.root, self.logs, self.checkpoints):
            try:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise HpodError(f"state directory {path}: cannot be created ({exc.strerror or exc})") from None
        return self

    def storage_url(self, override: str | None = None) -> str:
        return override if override is not None else f"sqlite:///{self.optuna_db}"


def open_storage(url: str):
    """An Optuna storage for a URL; SQLite gets a busy timeout so concurrent readers wait.

    Opening creates Optuna's tables on first use, and two processes doing that at once make
    one fail ("table studies already exists"), so SQLite opens are serialised by a file lock."""
    import optuna  # here, so that commands that never open a study start fast

    if not url.startswith("sqlite:///"):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # SQLAlchemy's URL, driver and connection errors share no base
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise HpodError(
                f"storage {shown_url(url)!r} cannot be opened ({type(exc).__name__}: {first[:200]})"
            ) from None
    lock_path = Path(url.removeprefix("sqlite:///") + ".lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})


def shown_url(url: str) -> str:
    """The URL as messages may show it: a password in it is masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy can parse: nothing in it to hide
        return url
