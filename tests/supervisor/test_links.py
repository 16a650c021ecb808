"""hpod writes and deletes only what it made: symbolic links planted in the state directory are
refused in one line, and nothing they point at is written or removed."""

import optuna
import pytest

from hpod.errors import HpodError
from hpod.records import TrialLog
from hpod.supervisor.trials import write_traceback
from hpod.trial import checkpoint
from tests.helpers import enqueue, finish, start_daemon, status, write_job

STUDY = "daemon-20K-h1"


def outside(tmp_path):
    """A folder that is not hpod's, with files a planted link would expose."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "trial_00000.best.pt").write_text("precious")
    (elsewhere / "notes.log").write_text("mine\n")
    return elsewhere


def snapshot(folder) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("planted", ["checkpoints", "log"])
def test_a_daemon_refuses_a_study_whose_files_are_planted_links_and_touches_nothing_outside(tmp_path, planted):
    state, elsewhere = tmp_path / "state", outside(tmp_path)
    enqueue(state, write_job(tmp_path, epochs=1), "--no-estimate")
    before = snapshot(elsewhere)
    (state / "checkpoints").mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    if planted == "checkpoints":
        (state / "checkpoints" / STUDY).symlink_to(elsewhere, target_is_directory=True)
    else:
        (state / "logs" / f"{STUDY}.log").symlink_to(elsewhere / "notes.log")
    finish(start_daemon(state, "--until-idle"))
    [job] = status(state)["jobs"]
    assert job["state"] == "failed" and "is a symbolic link" in job["last_error"], job
    assert "\n" not in job["last_error"]
    assert snapshot(elsewhere) == before


def test_each_writer_refuses_a_link_where_it_writes(tmp_path):
    elsewhere = outside(tmp_path)
    before = snapshot(elsewhere)
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / "s").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(HpodError, match="symbolic link"):
        checkpoint.save(root / "s" / "trial_00001.pt", {"a": 1})
    with pytest.raises(HpodError, match="symbolic link"):
        checkpoint.prune(root, "s", 0, {0})
    with pytest.raises(HpodError, match="symbolic link"):
        write_traceback(root / "s", "s.trial-0", ValueError("x"))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "s.log").symlink_to(elsewhere / "notes.log")
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    TrialLog(logs / "s.log")(study, study.trials[0])  # the line goes to the log only
    assert snapshot(elsewhere) == before
