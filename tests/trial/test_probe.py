"""The micro-batch choice cache, shared by every worker of a machine."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from hpod.trial.probe import Choice, ChoiceCache

WRITERS, KEYS_EACH = 6, 25


def write_keys(path: str, writer: int) -> None:
    cache = ChoiceCache(Path(path))
    for i in range(KEYS_EACH):
        cache.put(f"arch{writer}-{i}", Choice(micro_batch=2**i % 512 or 1, predicted=i, measured=None, backoffs=0))


def test_workers_putting_choices_at_once_lose_none_of_them(tmp_path):
    """Read-modify-write without a lock kept only the last writer's view of the file."""
    path = tmp_path / "micro_batches.json"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=write_keys, args=(str(path), w)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0
    stored = ChoiceCache(path).read()
    assert len(stored) == WRITERS * KEYS_EACH
    assert ChoiceCache(path).get("arch3-4") == Choice(micro_batch=16, predicted=4, measured=None, backoffs=0)
