"""The estimate at enqueue against what training really takes on this machine, measured side by
side in one process (so a busy machine slows both alike)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from hpod.errors import HpodError
from hpod.study.estimate import Estimate, duration, epoch_seconds, estimate_study, representative
from hpod.study.plan import plan_study
from hpod.supervisor.job_row import check_duration
from hpod.trial.train import TrainConfig, Trainer


def test_an_epoch_estimate_is_within_a_factor_of_two_of_a_measured_epoch(tiny_job, dataset_h5):
    plan = plan_study(tiny_job, 100_000, 5)
    for entry in representative(plan.grid)[::2]:  # the smallest and the largest
        times: dict = {}
        estimated = epoch_seconds(plan, entry, dataset_h5, "cpu", times)
        model_config = entry.arch.model_config(dataset_h5.shape, dropout=0.1)
        batch = tiny_job.train.effective_batch
        config = TrainConfig(1e-3, 1e-4, 10, epochs=1, effective_batch=batch, micro_batch=batch, patience=5)
        trainer = Trainer(model_config, config, dataset_h5)
        start = time.perf_counter()
        trainer.fit()
        measured = time.perf_counter() - start
        assert measured / 2 <= estimated <= measured * 2, (entry.arch.key, estimated, measured)
        assert len(times) == 1  # timed once, kept for the next estimate of this architecture


def test_a_study_estimate_spans_its_trials_and_seed_runs(tiny_job, dataset_h5):
    plan = plan_study(tiny_job, 100_000, 5)
    times: dict = {}
    estimate = estimate_study(plan, dataset_h5, times)
    low, high = estimate.study_s
    runs = tiny_job.search.n_trials + tiny_job.search.final_seeds
    assert low == pytest.approx(runs * estimate.trial_s[0]) and high == pytest.approx(runs * estimate.trial_s[1])
    assert estimate.epoch_s[0] <= estimate.epoch_s[1] and low < estimate.expected_s < high
    assert set(estimate.timed) == {e.arch.key for e in representative(plan.grid)}
    again = estimate_study(plan, dataset_h5, times)  # from the cache: no new timing, the same numbers
    assert again == estimate
    assert Estimate.from_dict(estimate.as_dict()) == estimate


def test_a_study_past_max_days_is_refused_with_its_numbers_unless_forced(tiny_job, dataset_h5):
    plan = plan_study(tiny_job, 100_000, 5)
    slow = Estimate("cpu", (3600.0, 7200.0), (36_000.0, 720_000.0), (360_000.0, 7_200_000.0), {})
    with pytest.raises(HpodError, match=r"about 18d\d\dh .*past search.max_days 7"):
        check_duration(plan, slow, force=False)
    check_duration(plan, slow, force=True)
    relaxed = dataclasses.replace(
        plan, job=dataclasses.replace(tiny_job, search=dataclasses.replace(tiny_job.search, max_days=30))
    )
    check_duration(relaxed, slow, force=False)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.5, "0.5 s"), (42, "42 s"), (250, "4m10s"), (11_100, "3h05m"), (540_000, "6d06h")]
)
def test_durations_read_in_two_units(seconds, text):
    assert duration(seconds) == text
