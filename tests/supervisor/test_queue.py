import multiprocessing
import sqlite3
import time

import pytest

from hpod.errors import HpodError
from hpod.supervisor.queue import Queue
from hpod.supervisor.schema import MIGRATIONS


def job(name: str = "s", **kw) -> dict:
    row = {"study_name": name, "budget": 20_000, "horizon": 1, "job_name": "t", "job_text": "",
           "data_sha256": "x", "n_trials": 2}  # fmt: skip
    return row | kw


@pytest.fixture
def queue(tmp_path) -> Queue:
    return Queue(tmp_path / "queue.db")


def test_claim_returns_none_when_queue_is_empty(queue):
    assert queue.claim("a", 60) is None


def test_claim_takes_the_highest_priority_then_the_oldest(queue):
    ids = queue.enqueue([job("low"), job("high", priority=5), job("low2")])
    assert [queue.claim("a", 60).id for _ in range(3)] == [ids[1], ids[0], ids[2]]
    assert queue.claim("a", 60) is None


def test_an_interrupted_job_is_first_in_line(queue):
    first, _ = queue.enqueue([job("a", priority=9), job("b")])
    queue.claim("d1", 60)
    queue.release(first, "d1", "interrupted")
    queue.enqueue([job("c", priority=99)])
    assert queue.claim("d2", 60).id == first
    assert queue.job(first).attempts == 2


def test_a_claim_sets_owner_lease_and_attempts(queue):
    (job_id,) = queue.enqueue([job()])
    row = queue.claim("daemon-1", 60)
    assert (row.id, row.state, row.owner, row.attempts) == (job_id, "running", "daemon-1", 1)
    assert row.lease_until > time.time() + 50


def test_heartbeats_and_releases_are_fenced_on_the_owner(queue):
    (job_id,) = queue.enqueue([job()])
    queue.claim("a", 60)
    assert not queue.extend(job_id, "b", 60, 1.0)
    assert not queue.release(job_id, "b", "done")
    assert queue.extend(job_id, "a", 60, 1.5) and queue.job(job_id).run_s == 1.5
    assert queue.release(job_id, "a", "done") and queue.job(job_id).state == "done"


def test_a_job_whose_lease_expired_is_reclaimable(queue):
    (job_id,) = queue.enqueue([job()])
    queue.claim("a", -1)  # already expired
    row = queue.claim("b", 60)
    assert row.id == job_id and row.owner == "b"
    assert not queue.extend(job_id, "a", 60, 1.0)  # the old holder is fenced out


def test_jobs_of_a_dead_owner_become_interrupted_or_what_was_asked(queue):
    first, second = queue.enqueue([job("a"), job("b")])
    queue.claim("dead", 600)
    queue.claim("dead", 600)
    queue.request(second, "pause")
    assert sorted(queue.interrupt_dead_owners(lambda owner: owner == "dead")) == [first, second]
    assert (queue.job(first).state, queue.job(second).state) == ("interrupted", "paused")


def test_duplicates_of_an_active_study_are_refused_unless_forced(queue):
    queue.enqueue([job("s")])
    with pytest.raises(HpodError, match="already queued as job 1"):
        queue.enqueue([job("other"), job("s")])
    assert len(queue.jobs()) == 1  # all or nothing
    queue.enqueue([job("s")], force=True)
    assert len(queue.jobs()) == 2


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [("queued", "pause", "paused"), ("paused", "resume", "queued"), ("queued", "cancel", "cancelled"),
     ("interrupted", "pause", "paused"), ("running", "pause", "pausing"), ("running", "cancel", "cancelling")],
)  # fmt: skip
def test_requests_move_a_job_or_ask_its_daemon(queue, state, action, expected):
    (job_id,) = queue.enqueue([job()])
    queue.conn.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job_id))
    assert queue.request(job_id, action) == expected
    if state == "running":
        assert queue.control(job_id) == action and queue.job(job_id).state == "running"


@pytest.mark.parametrize(("state", "action"), [("done", "cancel"), ("queued", "resume"), ("paused", "pause")])
def test_impossible_requests_are_refused(queue, state, action):
    (job_id,) = queue.enqueue([job()])
    queue.conn.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job_id))
    with pytest.raises(HpodError, match=f"job {job_id}"):
        queue.request(job_id, action)
    with pytest.raises(HpodError, match="no job 99"):
        queue.request(99, action)


def test_the_database_is_wal_with_full_sync_and_migrates_once(tmp_path):
    Queue(tmp_path / "q.db").close()
    queue = Queue(tmp_path / "q.db")
    assert queue.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert queue.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert queue.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_queue_of_the_first_schema_upgrades_keeping_its_jobs(tmp_path):
    import sqlite3

    conn = sqlite3.connect(tmp_path / "q.db")
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    conn.execute(
        "INSERT INTO jobs (study_name, budget, horizon, job_name, job_text, data_sha256, n_trials, created) "
        "VALUES ('s-2M-h1', 2000000, 1, 's', '', 'x', 5, 0)"
    )
    conn.commit()
    conn.close()
    [job] = Queue(tmp_path / "q.db").jobs()
    assert job.study_name == "s-2M-h1" and job.memory_limit_gib is None and job.dropped_archs == frozenset()


def _claim_all(path, owner, out):
    queue = Queue(path)
    claimed = []
    while (row := queue.claim(owner, 600)) is not None:
        claimed.append(row.id)
    out.put(claimed)


def _enqueue_one(path, index, out):
    out.put(Queue(path).enqueue([job(f"study-{index}")])[0])


def race(target, path, n: int) -> list:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    processes = [ctx.Process(target=target, args=(path, arg, out)) for arg in range(n)]
    for p in processes:
        p.start()
    results = [out.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def test_racing_claimers_never_take_the_same_job(tmp_path):
    path = tmp_path / "queue.db"
    ids = Queue(path).enqueue([job(f"s{i}") for i in range(60)], force=True)
    claimed = [i for batch in race(_claim_all, path, 8) for i in batch]
    assert sorted(claimed) == sorted(ids)  # each job exactly once
    assert {r.attempts for r in Queue(path).jobs()} == {1}


def test_fifty_concurrent_enqueues_all_land(tmp_path):
    path = tmp_path / "queue.db"
    ids = race(_enqueue_one, path, 50)
    assert len(set(ids)) == 50
    assert sorted(r.study_name for r in Queue(path).jobs()) == sorted(f"study-{i}" for i in range(50))
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_job_after_another_is_claimed_only_once_that_one_ends_or_its_search_does(queue):
    first = queue.enqueue([job("a", n_trials=2)])[0]
    rung, waiter = queue.enqueue([job("b"), job("c", after_row=0)], after=first)
    assert queue.waits() == {rung: first, waiter: rung}
    assert queue.claim("x", 60).id == first and queue.claim("x", 60) is None
    queue.record_progress(first, "x", trials_finished=2)  # the search of `first` is over, not the job
    assert queue.claim("x", 60) is None  # `rung` waits for `first` to end
    queue.release(first, "x", "done")
    assert queue.claim("x", 60).id == rung
    queue.record_progress(rung, "x", trials_finished=2)
    assert queue.claim("x", 60).id == waiter  # a ladder rung waits only for the search below
