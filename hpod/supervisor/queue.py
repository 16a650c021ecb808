"""The job queue: one SQLite file (WAL, synchronous=FULL), a handful of verbs.

Claiming is one `BEGIN IMMEDIATE` + `UPDATE … RETURNING` that sets owner and lease, so two
daemons can never take the same job and a daemon killed mid-claim loses nothing. Every change
a daemon makes to a job it holds is fenced on `owner`, so a daemon that lost its lease cannot
overwrite the job's new holder.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from hpod.errors import HpodError
from hpod.state import (
    DamagedError,
    StateDir,
    access_problem,
    check_database,
    damaged,
    match_umask,
    read_only_uri,
    writable_problem,
)
from hpod.supervisor.rows import ACTIVE, ENDED, Control, DaemonEntry, JobState, Notice, QueuedJob
from hpod.supervisor.schema import DEATH, DEATH_VALUE, MIGRATIONS, READY

if TYPE_CHECKING:
    import sqlite_utils

BUSY_TIMEOUT_S = 30
CLAIM_ORDER = "state = 'queued', priority DESC, created, id"  # interrupted first, then priority, then age


class Queue:
    """The jobs table and the daemons that work on it."""

    def __init__(self, path: Path):
        self.path = path
        check_database(path)
        self.read_only = read_only_uri(path)  # a read-only state directory: the reading commands work
        try:
            created = not path.exists()
            target, uri = (path, False) if self.read_only is None else (self.read_only, True)
            conn = sqlite3.connect(
                target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=uri
            )
            self.conn = conn
            if created:
                match_umask(path)
            if self.read_only is None and conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except (sqlite3.OperationalError, PermissionError) as exc:  # another user's queue, most often
            raise HpodError(access_problem(path, exc)) from None
        except sqlite3.DatabaseError as exc:  # a damaged header or page
            raise DamagedError(damaged(path, f"cannot be read ({exc})")) from None

    @classmethod
    def existing(cls, state: StateDir) -> Queue:
        """The queue of a state directory where something was enqueued; an error otherwise."""
        if not state.queue_db.exists():
            raise HpodError(f"no queue in {state.root} (nothing was enqueued there)")
        return cls(state.queue_db)

    @cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils for inserts and upserts, imported when first needed: it imports pandas
        (0.4 s), which `hpod status`, a read, should not wait for."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def rows(self, sql: str, params: tuple = ()) -> list[dict]:
        try:
            return as_dicts(self.conn.execute(sql, params))
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:  # locked, constraint: not damage
                raise
            raise DamagedError(damaged(self.path, f"cannot be read ({exc})")) from None

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock first, so read-then-write cannot deadlock."""
        if self.read_only is not None:
            raise HpodError(
                f"{self.path} is read-only here ({writable_problem(self.path)}): this command changes the queue"
            )
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself on a full disk
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= len(MIGRATIONS):
            return
        if self.read_only is not None:
            raise HpodError(
                f"{self.path} is from an older hpod and read-only here: a daemon or a command that writes updates it"
            )
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")

    def enqueue(self, jobs: list[dict], *, force: bool = False, after: int | None = None) -> list[int]:
        """Add jobs, all or none; refuses one whose study is already queued or running unless forced.
        A row's `after_row` (the index of an earlier row: the rung below of a ladder) makes it wait
        for that job's search; every other row waits for job `after` to end, if given."""
        now = time.time()
        with self.transaction() as conn:
            if not force:
                for job in jobs:
                    if (duplicate := active_job(conn, job["study_name"], job.get("storage"))) is not None:
                        raise HpodError(
                            f"study {job['study_name']} is already {duplicate[1]} as job {duplicate[0]} "
                            "(--force to add it again)"
                        )
            if after is not None:
                self.job(after)  # an error names a job that does not exist
            ids: list[int] = []
            for job in jobs:
                row = {key: value for key, value in job.items() if key != "after_row"}
                below = job.get("after_row")
                row["after_job"], row["after_search"] = (after, 0) if below is None else (ids[below], 1)
                ids.append(self.db["jobs"].insert({**row, "created": now}).last_pk)
            return ids

    def claim(self, owner: str, lease_s: float) -> QueuedJob | None:
        """Take the next job: interrupted ones first, then by priority and age; None if none is ready."""
        now = time.time()
        with self.transaction() as conn:
            cursor = conn.execute(
                f"""
                UPDATE jobs SET state = 'running', owner = ?, lease_until = ?, attempts = attempts + 1,
                    started = coalesce(started, ?), claimed = ?, current_trial = NULL, current_epoch = NULL,
                    crashes = CASE WHEN state = 'running' THEN {DEATH_VALUE} ELSE crashes END
                WHERE id = (
                    SELECT id FROM jobs AS j
                    WHERE (state IN ('queued', 'interrupted') OR (state = 'running' AND lease_until < ?)) AND {READY}
                    ORDER BY {CLAIM_ORDER} LIMIT 1)
                RETURNING *
                """,
                (owner, now + lease_s, now, now, now),
            )
            rows = as_dicts(cursor)
        return QueuedJob.from_row(rows[0]) if rows else None

    def extend(self, job_id: int, owner: str, lease_s: float, held_s: float) -> bool:
        """Extend the lease of a job this owner holds; False if it holds it no more."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET lease_until = ?, run_s = run_s + ? WHERE id = ? AND owner = ? AND state = 'running'",
                (time.time() + lease_s, held_s, job_id, owner),
            )
        return cursor.rowcount == 1

    def release(self, job_id: int, owner: str, state: JobState, error: str | None = None) -> bool:
        """End this owner's hold on a job, leaving it in `state` (done, failed, interrupted, …)."""
        finished = time.time() if state in ENDED else None
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, owner = NULL, lease_until = NULL, control = NULL, waiting = NULL, "
                "finished = ?, last_error = coalesce(?, last_error), current_trial = NULL, current_epoch = NULL "
                "WHERE id = ? AND owner = ?",
                (state, finished, error, job_id, owner),
            )
        return cursor.rowcount == 1

    def record_progress(self, job_id: int, owner: str, **fields) -> None:
        """Copy a running job's progress (trial, epoch, best so far) to its row, for `hpod status`."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE jobs SET {assignments}, progress_at = ? WHERE id = ? AND owner = ?",
                (*fields.values(), time.time(), job_id, owner),
            )

    def refresh_summary(self, job_id: int, trials_finished: int, best_value: float | None, best_arch: str | None):
        """Copy a study's counts to its job after trials were added outside the daemon (an import)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET trials_finished = ?, best_value = ?, best_arch = ? WHERE id = ?",
                (trials_finished, best_value, best_arch, job_id),
            )

    def control(self, job_id: int) -> Control | None:
        """What a person asked of a running job (pause or cancel), if anything."""
        row = self.conn.execute("SELECT control FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None or row[0] is None else Control(row[0])

    def request(self, job_id: int, action: str) -> str:
        """Pause, resume or cancel a job; a running one is asked through `control` and acts
        between steps. Returns the job's new state, or 'pausing'/'cancelling'."""
        with self.transaction() as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise HpodError(f"no job {job_id}")
            new_state, control = _transition(job_id, JobState(row[0]), action)
            if control is not None:
                conn.execute("UPDATE jobs SET control = ? WHERE id = ?", (control, job_id))
                return "pausing" if control is Control.PAUSE else "cancelling"
            finished = time.time() if new_state == JobState.CANCELLED else None
            conn.execute("UPDATE jobs SET state = ?, finished = ? WHERE id = ?", (new_state, finished, job_id))
            return new_state

    def jobs(self) -> list[QueuedJob]:
        return self.queued_jobs("SELECT * FROM jobs ORDER BY id")

    def queued_jobs(self, sql: str, params: tuple = ()) -> list[QueuedJob]:
        return [QueuedJob.from_row(row) for row in self.rows(sql, params)]

    def in_claim_order(self) -> list[QueuedJob]:
        """The jobs held now, then those a daemon will claim, in the order it will claim them."""
        return self.queued_jobs(
            f"SELECT * FROM jobs WHERE state IN ('running', 'queued', 'interrupted') "
            f"ORDER BY state != 'running', {CLAIM_ORDER}"
        )

    def waits(self) -> dict[int, int]:
        """Queued jobs that may not be claimed yet → the job each waits for."""
        rows = self.conn.execute(
            f"SELECT j.id, j.after_job FROM jobs AS j WHERE j.state IN ('queued', 'interrupted') AND NOT {READY}"
        ).fetchall()
        return dict(rows)

    def find(self, ref: str) -> QueuedJob:
        """A job by id, or the latest job of a study by name."""
        if ref.isdigit():
            return self.job(int(ref))
        rows = self.queued_jobs("SELECT * FROM jobs WHERE study_name = ? ORDER BY id DESC LIMIT 1", (ref,))
        if not rows:
            raise HpodError(f"no job {ref!r}: give a job id or the name of a queued study")
        return rows[0]

    def job(self, job_id: int) -> QueuedJob:
        """The job; an error names a job that does not exist (SQLite ids fit in 63 bits)."""
        rows = self.queued_jobs("SELECT * FROM jobs WHERE id = ?", (job_id,)) if 0 < job_id < 2**63 else []
        if not rows:
            raise HpodError(f"no job {job_id}")
        return rows[0]

    def register_daemon(self, owner: str, pid: int, host: str) -> None:
        now = time.time()
        with self.transaction():
            self.db["daemons"].upsert(
                {"owner": owner, "pid": pid, "host": host, "started": now, "heartbeat": now}, pk="owner"
            )

    def daemon_heartbeat(
        self,
        owner: str,
        paused_reason: str | None,
        paused_since: float | None,
        readings: str | None,
        window_opens: float | None = None,
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE daemons SET heartbeat = ?, paused_reason = ?, paused_since = ?, readings = ?, window_opens = ? "
                "WHERE owner = ?",
                (time.time(), paused_reason, paused_since, readings, window_opens, owner),
            )

    def add_notice(self, text: str) -> None:
        """Keep a line a daemon said for `hpod status`, which shows it until a daemon runs."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO notices (time, text) VALUES (?, ?)", (time.time(), text))

    def latest_notice(self) -> Notice | None:
        rows = self.conn.execute("SELECT time, text FROM notices ORDER BY id DESC LIMIT 1").fetchall()
        return Notice(*rows[0]) if rows else None

    def unregister_daemon(self, owner: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM daemons WHERE owner = ?", (owner,))

    def daemons(self) -> list[DaemonEntry]:
        return [DaemonEntry.from_row(row) for row in self.rows("SELECT * FROM daemons ORDER BY started")]

    def interrupt_dead_owners(self, is_dead) -> list[int]:
        """Jobs held by a daemon that has died (kill -9, power loss) become interrupted at once,
        rather than after their lease runs out; their dead daemons' rows go."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT id, owner FROM jobs WHERE state = 'running'").fetchall()
            dead = [(job_id, owner) for job_id, owner in rows if is_dead(owner)]
            for job_id, owner in dead:
                conn.execute(
                    "UPDATE jobs SET state = CASE control WHEN 'pause' THEN 'paused' WHEN 'cancel' THEN 'cancelled' "
                    f"ELSE 'interrupted' END, control = NULL, owner = NULL, lease_until = NULL, {DEATH} "
                    "WHERE id = ? AND owner = ?",
                    (job_id, owner),
                )
            for (owner,) in conn.execute("SELECT owner FROM daemons").fetchall():
                if is_dead(owner):
                    conn.execute("DELETE FROM daemons WHERE owner = ?", (owner,))
        return [job_id for job_id, _ in dead]


def active_job(conn: sqlite3.Connection, study: str, storage: str | None, other_than: int = 0) -> tuple | None:
    """(id, state) of a job queued or running for the study, other than job `other_than`."""
    return conn.execute(
        f"SELECT id, state FROM jobs WHERE study_name = ? AND coalesce(storage, '') = ? AND id != ? "
        f"AND state IN ({','.join('?' * len(ACTIVE))})",
        (study, storage or "", other_than, *ACTIVE),
    ).fetchone()


def as_dicts(cursor: sqlite3.Cursor) -> list[dict]:
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _transition(job_id: int, state: JobState, action: str) -> tuple[JobState, Control | None]:
    """(new state, control to ask of the holding daemon) for a person's action on a job."""
    if action == "resume":
        if state == JobState.PAUSED:
            return JobState.QUEUED, None
        raise HpodError(f"job {job_id} is {state}, not paused")
    if state in ENDED:
        raise HpodError(f"job {job_id} is already {state}")
    if state == JobState.RUNNING:
        return state, Control(action)
    if action == "pause":
        if state == JobState.PAUSED:
            raise HpodError(f"job {job_id} is already paused")
        return JobState.PAUSED, None
    return JobState.CANCELLED, None
