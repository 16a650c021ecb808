"""A throwaway PostgreSQL cluster for the tests: initdb into a temp directory, listening only on
a Unix socket there, a fresh database per test. The real server, never a mock.

`initdb` refuses root, so as root the cluster belongs to the `postgres` system user."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def bindir() -> Path:
    """Where initdb and pg_ctl live: `pg_config --bindir`, else Debian's versioned folder."""
    try:
        found = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
        if (found / "initdb").exists():
            return found
    except FileNotFoundError:
        pass
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed (no initdb); .ci/run installs Debian's postgresql-15")
    return Path(candidates[-1]).parent


class Cluster:
    def __init__(self) -> None:
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="hpod-pg-"))
        self.data, self.socket = self.root / "data", self.root
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        os.chmod(self.root, 0o755)

    def run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, text=True)

    def start(self) -> Cluster:
        self.run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.serve()
        return self

    def serve(self) -> None:
        """Start the server on the cluster's data (again, after `halt`)."""
        options = f"-k {self.socket} -c listen_addresses='' -c fsync=off -c max_connections=200"
        log_file = str(self.root / "log")
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-l", log_file, "start")

    def halt(self) -> None:
        """Stop the server as a crash would (`-m immediate`: connections cut, no checkpoint)."""
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        try:
            with contextlib.suppress(subprocess.CalledProcessError):  # a test may have halted it already
                self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh database; its SQLAlchemy URL (psycopg 3 over the Unix socket)."""
        import psycopg

        name = f"hpod_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host={self.socket} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@/{name}?host={self.socket}"


def cluster() -> Iterator[Cluster]:
    running = Cluster().start()
    try:
        yield running
    finally:
        running.stop()
