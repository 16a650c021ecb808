"""The pause policy, driven by scripted readings on a fake clock, and by real psutil readings."""

from __future__ import annotations

import dataclasses

import pytest

from hpod.guard.policy import GIB, Guard, bounds
from hpod.guard.sensors import MemoryReader, PressureReader, parse_pressure, read_all
from hpod.job import GuardSpec
from hpod.trial.grid import Arch
from hpod.trial.train import Interrupted, TrainConfig, Trainer

ARCH = Arch(16, 1, 2, 32)
SPEC = GuardSpec(hold_s=30.0, shrink_after_s=60.0, check_s=0.0, poll_s=5.0)
COOL = {"cpu_temp_c": 60.0, "cpu_temp_high_c": None, "ram_available": 16 * GIB}


class Script:
    """Readings in turn, one per read; the last one repeats."""

    def __init__(self, readings: list[dict]):
        self.readings, self.reads = readings, 0

    def __call__(self) -> dict:
        self.reads += 1
        return self.readings[min(self.reads, len(self.readings)) - 1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def guard(readings: list[dict], spec: GuardSpec = SPEC) -> tuple[Guard, Clock, list]:
    clock, notices = Clock(), []
    return Guard(spec, Script(readings), clock=clock, sleep=clock.sleep, notify=notices.append), clock, notices


def cpu(*temps: float) -> list[dict]:
    return [COOL | {"cpu_temp_c": t} for t in temps]


def test_a_temperature_ramp_pauses_at_the_threshold_and_resumes_only_after_cooling_and_holding():
    # 85 °C pauses; the resume bound is 75 °C; 30 s under it (6 polls of 5 s) lets it go on.
    g, clock, notices = guard(cpu(80, 86, 88, 84, 78, 76, 74, 73, 72, 74, 71, 70, 70, 70, 70))
    assert g.between_steps(lambda: None, can_shrink=True) is False  # 80 °C: go on
    assert clock.now == 0 and not g.pauses
    assert g.between_steps(lambda: None, can_shrink=True) is False  # 86 °C: pause until calm
    [pause] = g.pauses
    assert pause.reason == "cpu 86 °C ≥ 85 °C" and not pause.shrink
    # polls read 88, 84, 78, 76 (not calm: hysteresis), then 74 from t=25 s; 30 s calm at t=55 s
    assert pause.seconds == pytest.approx(55.0)
    assert notices == ["cpu 86 °C ≥ 85 °C", None]


def test_readings_that_dip_under_the_resume_bound_restart_the_hold():
    g, _, _ = guard(cpu(90, 70, 70, 80, 70, 70, 70, 70, 70, 70, 70))
    g.between_steps(lambda: None, can_shrink=True)
    # 70 at t=5, 10, then 80 at t=15 breaks the hold; calm from t=20, released at t=50
    assert g.pauses[0].seconds == pytest.approx(50.0)


def test_a_sensors_own_high_mark_replaces_the_default_threshold():
    [bound] = [b for b in bounds({"cpu_temp_c": 71.0, "cpu_temp_high_c": 70.0}, SPEC) if b.kind == "cpu"]
    assert bound.pausing and bound.text == "cpu 71 °C ≥ 70 °C"


def test_an_unknown_reading_is_neither_cool_nor_hot():
    assert bounds({"cpu_temp_c": None, "ram_available": None, "memory_pressure_pct": None}, SPEC) == []
    g, _, notices = guard([{"cpu_temp_c": None}])
    assert g.between_steps(lambda: None, can_shrink=True) is False and notices == []


def test_gpu_slowdown_threshold_and_throttle_bit_pause():
    readings = {"gpu_temp_c": 83.0, "gpu_temp_slowdown_c": 87.0, "gpu_thermal_throttle": 1.0}
    texts = [b.text for b in bounds(readings, SPEC) if b.pausing]
    assert texts == ["gpu 83 °C ≥ 82 °C", "gpu thermal throttling"]


def test_pressure_is_read_from_psi_text():
    text = "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=9\n"
    assert parse_pressure(text) == 12.5
    assert PressureReader(paths=()).read() == {"memory_pressure_pct": None}


def config(**kw) -> TrainConfig:
    base = {"learning_rate": 1e-3, "weight_decay": 1e-3, "warmup_steps": 5, "epochs": 2, "seed": 3}
    return TrainConfig(**(base | kw))


def test_pausing_a_real_training_loop_changes_nothing_but_the_time(dataset_h5):
    model_config = ARCH.model_config(dataset_h5.shape, dropout=0.0)
    straight = Trainer(model_config, config(), dataset_h5).fit()
    # hot at the 3rd and 14th reading, cool otherwise; each pause needs 30 s of calm
    temps = [60, 60, 90, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 95] + [60] * 20
    g, _, notices = guard(cpu(*temps))
    steps = []
    trainer = Trainer(model_config, config(), dataset_h5, guard=g)
    result = trainer.fit(after_step=lambda epoch, step: steps.append((epoch, step)))
    assert [r.val_loss for r in result.history] == [r.val_loss for r in straight.history]
    assert [p.reason for p in g.pauses] == ["cpu 90 °C ≥ 85 °C", "cpu 95 °C ≥ 85 °C"]
    assert all(p.seconds == pytest.approx(35.0) for p in g.pauses)  # calm from the first poll, 5 s in
    assert notices == ["cpu 90 °C ≥ 85 °C", None, "cpu 95 °C ≥ 85 °C", None]
    assert len(steps) > len(set(steps))  # the pause polled the step hook, where a stop gets through


def test_memory_pressure_that_persists_through_a_pause_halves_the_micro_batch(dataset_h5):
    low = COOL | {"ram_available": 0.5 * GIB}
    recovered = COOL | {"ram_available": 8 * GIB}
    # the floor is crossed at the 2nd reading and stays crossed for 12 polls, to shrink_after_s
    g, _, _ = guard([COOL, *[low] * 13, recovered])
    model_config = ARCH.model_config(dataset_h5.shape, dropout=0.0)
    trainer = Trainer(model_config, config(epochs=1, micro_batch=64), dataset_h5, guard=g)
    result = trainer.fit()
    assert trainer.micro_batch == 32 and result.epochs_run == 1
    [pause] = g.pauses
    assert pause.shrink and pause.reason == "RAM available 0.5 GiB < 1 GiB"
    assert pause.seconds == pytest.approx(60.0)  # shrink_after_s, then the step goes on
    assert g.take_pauses()[0]["shrink"] is True and g.pauses == []


def test_a_stop_gets_through_a_pause():
    g, _, _ = guard(cpu(99))

    def stop() -> None:
        raise Interrupted("stop requested")

    with pytest.raises(Interrupted):
        g.between_steps(stop, can_shrink=False)


def test_a_memory_floor_above_what_is_free_pauses_a_real_run_on_real_psutil_readings(dataset_h5):
    available = MemoryReader().read()["ram_available"]
    floor = available / GIB + 64  # more than this machine has free
    spec = dataclasses.replace(SPEC, memory_floor_gib=floor, memory_resume_gib=floor, poll_s=0.01)
    readers = (MemoryReader(),)
    notices, polls = [], []

    def poll() -> None:
        polls.append(1)
        if len(polls) >= 3:
            raise Interrupted("stop requested")  # what `hpod stop` does to a paused trial

    g = Guard(spec, lambda: read_all(readers), notify=notices.append)
    trainer = Trainer(ARCH.model_config(dataset_h5.shape), config(epochs=1), dataset_h5, guard=g)
    with pytest.raises(Interrupted):
        trainer.fit(after_step=lambda epoch, step: poll() if notices else None)
    assert trainer.position.step == 1  # paused after the first step, never took a second
    assert notices and notices[0].startswith("RAM available ") and f"< {floor:g} GiB" in notices[0]
