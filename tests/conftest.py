from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from pathlib import Path

import psutil
import pytest

from hpod.job import JobSpec, load_job
from hpod.trial.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
TINY_JOB = ROOT / "jobs" / "tiny.yaml"


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """Every process a test started (daemons, their workers, CLI calls) ends with the test, pass
    or fail: a failed daemon test must not leave a daemon training for minutes on a loaded
    machine. Processes running before the test (a session's PostgreSQL) are left alone."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    for process in me.children(recursive=True):
        if process.pid in before:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            group = os.getpgid(process.pid)
            if group == process.pid and group != os.getpgid(0):  # its own group: the group goes with it
                os.killpg(group, signal.SIGKILL)
            else:
                process.kill()


@pytest.fixture(scope="session")
def tiny_job() -> JobSpec:
    return load_job(TINY_JOB)


@pytest.fixture(scope="session")
def dataset_h5():
    return load_dataset(load_job(TINY_JOB).data, 5)


@pytest.fixture
def fast_job(tiny_job) -> JobSpec:
    """The tiny job with one-to-two-epoch trials and no pruning, for tests that run trials."""
    return dataclasses.replace(
        tiny_job,
        search=dataclasses.replace(tiny_job.search, epochs=(1, 2), pruner="none", n_trials=2),
        train=dataclasses.replace(tiny_job.train, max_epochs=2),
    )


@pytest.fixture(autouse=True)
def isolated_home(monkeypatch, tmp_path):
    """No test reads or writes the developer's own state directory."""
    monkeypatch.setenv("HPOD_HOME", str(tmp_path / "home-state"))


@pytest.fixture(scope="session")
def postgres_cluster():
    from tests.postgres import cluster

    yield from cluster()


@pytest.fixture
def postgres_url(postgres_cluster) -> str:
    """A fresh database on the session's throwaway PostgreSQL."""
    return postgres_cluster.new_database()
