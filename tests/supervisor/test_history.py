"""Which earlier jobs a new estimate is calibrated on: the job file's, in this queue, each study
once, with what their studies on a real storage recorded."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from hpod.state import StateDir
from hpod.storage import open_storage
from hpod.supervisor.enqueue import prepare_jobs
from hpod.supervisor.history import measured_calibration
from hpod.supervisor.liveness import host_name
from hpod.supervisor.queue import Queue
from tests.helpers import finished_trial


def test_a_job_files_started_studies_are_read_once_each_and_an_unreadable_storage_is_left_out(tmp_path, tiny_job):
    state = StateDir.resolve(tmp_path / "state").create()
    assert measured_calibration(state, "tiny", "cpu") is None  # no queue yet
    [row] = prepare_jobs(tiny_job, [20_000], [1])
    queue = Queue(state.queue_db)
    queue.enqueue([row])
    queue.enqueue([row], force=True)  # retried: two jobs of one study
    queue.enqueue([row | {"storage": f"sqlite:///{tmp_path}/gone.db"}], force=True)  # a storage not there
    while queue.claim("daemon", 60) is not None:  # started, as a daemon starts a job
        pass
    [waiting] = prepare_jobs(tiny_job, [30_000], [1])
    queue.enqueue([waiting])  # never started: not read, whatever its study holds
    study = optuna.create_study(study_name=row["study_name"], storage=open_storage(state.storage_url()))
    for epochs in (2, 3, 5):
        study.add_trial(finished_trial(TrialState.COMPLETE, host_name(), "cpu", epochs, 1.2))
    study.add_trial(finished_trial(TrialState.COMPLETE, "elsewhere", "cpu", 9, 1.2))
    unstarted = optuna.create_study(study_name=waiting["study_name"], storage=open_storage(state.storage_url()))
    unstarted.add_trial(finished_trial(TrialState.COMPLETE, host_name(), "cpu", 7, 1.2))
    calibration = measured_calibration(state, "tiny", "cpu")
    assert calibration.studies == 1 and sorted(r.epochs for r in calibration.runs) == [2, 3, 5]
    assert calibration.overhead_s is None  # neither job's held time is the whole study's
    assert calibration.epochs_at(20_000, 4) == (2 + 3 + 4) / 3
    assert measured_calibration(state, "tiny", "cuda") is None
