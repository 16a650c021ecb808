"""The estimate at enqueue: what it times and keeps, its spans, and the refusal past max_days.
How close it comes to a measured epoch is bench/estimate.py's to say (a default test never
times the machine)."""

from __future__ import annotations

import dataclasses

import pytest

from hpod.errors import HpodError
from hpod.study.duration import Estimate, duration
from hpod.study.estimate import (
    Timing,
    epoch_seconds,
    estimate_study,
    micro_step_seconds,
    per_layer,
    representative,
)
from hpod.study.plan import plan_study
from hpod.supervisor.enqueue import check_duration
from hpod.trial.grid import Arch, count_parameters, sample_flops
from hpod.trial.memory import GIB, estimate
from hpod.trial.probe import PeakMeter, can_measure


def test_an_epoch_estimate_times_each_architecture_once_and_keeps_it(tiny_job, dataset_h5):
    plan = plan_study(tiny_job, 100_000, 5)
    entry = representative(plan.grid)[0]
    times: dict = {}
    first = epoch_seconds(plan, entry, dataset_h5, "cpu", times, Timing.start(GIB))
    assert first > 0 and len(times) == 1
    kept = {
        key: value | {"compute": 2 * value["compute"], "update": 2 * value["update"]} for key, value in times.items()
    }
    late = Timing.start(GIB, seconds=-1)  # past its deadline: only what is kept is read
    assert epoch_seconds(plan, entry, dataset_h5, "cpu", kept, late, first=False) == pytest.approx(2 * first)


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


def test_a_step_over_the_timing_memory_is_fitted_from_shallower_models_within_that_memory(tiny_job, dataset_h5):
    plan = plan_study(tiny_job, 100_000, 5)
    deep = max((e for e in plan.grid if e.arch.n_layers > 2), key=lambda e: e.params)
    full = estimate(deep.arch, deep.params, dataset_h5.shape, 1, "cpu").peak
    two_layers = dataclasses.replace(deep.arch, n_layers=2)
    two = estimate(two_layers, count_parameters(two_layers, dataset_h5.shape), dataset_h5.shape, 1, "cpu").peak
    timing = Timing.start(8 * (full + two) // 2)  # an eighth of this limit lies between the two models' peaks
    meter = PeakMeter("cpu")
    meter.reset()
    found = micro_step_seconds(deep, 32, dataset_h5, tiny_job.train, "cpu", timing)
    assert found is not None and found[1].startswith("timed as 1 and ") and found[0].compute > 0
    if can_measure("cpu"):
        assert meter.peak() <= 1.3 * timing.bytes  # the memory model's tolerance (tests/trial/test_memory.py)
    assert micro_step_seconds(deep, 32, dataset_h5, tiny_job.train, "cpu", Timing.start(8 * two // 2)) is None


@pytest.mark.parametrize(
    ("one", "deep", "depth", "layers", "expected"),
    [(3.0, 5.0, 2, 10, 21.0), (3.0, 9.0, 4, 10, 21.0), (5.0, 5.0, 2, 4, 10.0), (2.0, 1.5, 2, 6, 4.5)],
)
def test_the_layer_fit_is_a_fixed_cost_plus_one_per_layer(one, deep, depth, layers, expected):
    assert per_layer(one, deep, depth, layers) == pytest.approx(expected)


def test_past_its_time_limit_an_estimate_scales_the_architectures_left_by_flops_and_says_so(tiny_job, dataset_h5):
    plan = plan_study(tiny_job, 100_000, 5)
    late = estimate_study(plan, dataset_h5, {}, Timing.start(GIB, seconds=-1))
    first, *rest = representative(plan.grid)
    assert late is not None and set(late.timed) == {e.arch.key for e in representative(plan.grid)}
    assert [f"{e.arch.key} scaled from {first.arch.key} by FLOPs (timing passed its limit)" for e in rest] == list(
        late.notes
    )
    for entry in rest:
        ratio = sample_flops(entry.arch, dataset_h5.shape) / sample_flops(first.arch, dataset_h5.shape)
        assert late.timed[entry.arch.key] == pytest.approx(late.timed[first.arch.key] * ratio)


def test_an_estimate_with_nothing_timeable_in_its_memory_is_none_and_says_why(tiny_job, dataset_h5, caplog):
    plan = plan_study(tiny_job, 100_000, 5)
    assert estimate_study(plan, dataset_h5, {}, Timing.start(8 * 2**20)) is None
    assert "no estimate" in caplog.text and "timing may use" in caplog.text


def test_flops_grow_with_each_dimension(dataset_h5):
    base = Arch(64, 2, 4, 256)
    for bigger in (Arch(128, 2, 4, 256), Arch(64, 4, 4, 256), Arch(64, 2, 4, 512)):
        assert sample_flops(bigger, dataset_h5.shape) > sample_flops(base, dataset_h5.shape)
    assert sample_flops(Arch(64, 4, 4, 256), dataset_h5.shape) < 2 * sample_flops(base, dataset_h5.shape) + 1
