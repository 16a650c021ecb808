"""The estimate at enqueue: what it times and keeps, its spans, and the refusal past max_days.
How close it comes to a measured epoch is bench/estimate.py's to say (a default test never
times the machine)."""

from __future__ import annotations

import dataclasses

import pytest

from hpod.errors import HpodError
from hpod.study.duration import Estimate, duration
from hpod.study.estimate import epoch_seconds, estimate_study, representative
from hpod.study.plan import plan_study
from hpod.supervisor.enqueue import check_duration


def test_an_epoch_estimate_times_each_architecture_once_and_keeps_it(tiny_job, dataset_h5):
    plan = plan_study(tiny_job, 100_000, 5)
    entry = representative(plan.grid)[0]
    times: dict = {}
    first = epoch_seconds(plan, entry, dataset_h5, "cpu", times)
    assert first > 0 and len(times) == 1
    kept = {key: {"seconds": 2 * value["seconds"]} for key, value in times.items()}
    assert epoch_seconds(plan, entry, dataset_h5, "cpu", kept) == 2 * first  # read back, not timed again


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
