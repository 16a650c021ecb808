"""The calibration of an estimate with this machine's earlier runs: which runs count, the epochs
runs of a size train, the measured speed against the timed steps and a run's cost besides its
epochs, on real Optuna studies."""

from __future__ import annotations

import statistics

import optuna
import pytest
from optuna.trial import TrialState

from hpod.study.calibration import Calibration, JobRuns, Run, calibrate, finished_runs
from hpod.study.duration import Estimate
from hpod.study.estimate import calibrated
from hpod.study.plan import plan_study
from hpod.trial.data import data_shape
from hpod.trial.grid import Arch, count_parameters
from tests.helpers import finished_trial

HOST = "lab-1"


def test_only_runs_this_host_finished_on_this_device_count():
    study = optuna.create_study()
    counted = [
        finished_trial(TrialState.COMPLETE, HOST, "cpu", 4, 1.5),
        finished_trial(TrialState.PRUNED, HOST, "cuda:1", 2, 0.5),
    ]
    for kept in counted:
        study.add_trial(kept)
    study.add_trial(finished_trial(TrialState.COMPLETE, "lab-2", "cpu", 9, 1.0))  # another host on a shared storage
    study.add_trial(finished_trial(TrialState.COMPLETE, None, "cpu", 9, 1.0))  # imported: measured elsewhere
    study.add_trial(finished_trial(TrialState.FAIL, HOST, "cpu", 9, 1.0))
    assert [r.epochs for r in finished_runs([study], HOST, "cpu")] == [4]
    cuda = finished_runs([study], HOST, "cuda")
    assert [(r.epochs, r.epoch_s) for r in cuda] == [(2, 0.5)]  # a slot's cuda:1 is the cuda device


def run(params: int, epochs: int, epoch_s: float | None = 1.0) -> Run:
    return Run(Arch(32, 2, 2, 64), params, epochs, epoch_s, 0.0)


def test_a_size_is_expected_to_train_the_epochs_runs_of_the_nearest_sizes_trained_capped_at_the_plan():
    small, large = [run(20_000, e) for e in (1, 2, 3, 2) * 2], [run(200_000, e) for e in (7, 9, 8, 8) * 2]
    calibration = Calibration("tiny", small + large, 2, None, None)
    assert calibration.epochs_at(22_000, 30) == statistics.fmean(r.epochs for r in small)
    assert calibration.epochs_at(180_000, 30) == statistics.fmean(r.epochs for r in large)
    assert calibration.epochs_at(180_000, 8) == statistics.fmean(min(r.epochs, 8) for r in large)


def test_speed_is_a_measured_epoch_over_the_timed_one_and_overhead_what_a_done_job_held_besides(tiny_job):
    shape = data_shape(tiny_job.data)
    arch = Arch(32, 2, 2, 64)
    timed, slower, extra = 0.8, 1.7, 3.5
    runs = [Run(arch, count_parameters(arch, shape), epochs, timed * slower, 0.0) for epochs in (2, 4, 6)]
    held = sum(r.epochs * r.epoch_s for r in runs) + extra * len(runs)
    done = JobRuns(runs, {arch.key: timed}, shape, held)
    calibration = calibrate("tiny", [done, JobRuns([], {}, shape, None)])
    assert calibration.studies == 1 and len(calibration.runs) == 3
    assert calibration.speed == pytest.approx(slower) and calibration.overhead_s == pytest.approx(extra)
    running = JobRuns(runs, {}, shape, None)  # not done and nothing timed: epochs only
    assert calibrate("tiny", [running]).speed is None and calibrate("tiny", [running]).overhead_s is None
    assert calibrate("tiny", []) is None


def test_a_calibrated_estimate_expects_the_measured_epochs_at_the_measured_speed_and_says_so(tiny_job):
    plan = plan_study(tiny_job, 50_000, 1)
    timed = {e.arch.key: 0.5 + i / 10 for i, e in enumerate(plan.grid[:3])}
    runs = tiny_job.search.n_trials + tiny_job.search.final_seeds
    raw = Estimate("cpu", (0.5, 0.7), (2.5, 60.0), (2.5 * runs, 60.0 * runs), timed, runs=runs)
    assert (
        "timed steps only" in raw.rests_on
        and "the range's middle" in raw.describe()
        and Estimate.from_dict(raw.as_dict()) == raw
    )
    epochs, speed, extra = 3, 1.4, 2.5
    sized = [run(e.params, epochs) for e in plan.grid]
    estimate = calibrated(raw, plan, Calibration("tiny", sized, 2, speed, extra))
    expected = statistics.fmean(epochs * s * speed + extra for s in timed.values())
    assert estimate.expected_run_s == pytest.approx(expected) and estimate.expected_s == pytest.approx(expected * runs)
    assert f"calibrated on {len(sized)} runs of 2 studies of tiny here: 3.0 epochs" in estimate.rests_on
    assert Estimate.from_dict(estimate.as_dict()) == estimate  # a queue row keeps it
    old_row = {k: v for k, v in raw.as_dict().items() if k not in ("calibrated_run_s", "runs", "basis")}
    assert Estimate.from_dict(old_row).expected_s == pytest.approx(raw.expected_s)  # a row queued before
