"""Sensors: real readings where the machine has them, None (never "cool") where it does not."""

from __future__ import annotations

import psutil

from hpod.guard.sensors import (
    CpuTemperatureReader,
    MemoryReader,
    NvmlReader,
    PressureReader,
    default_readers,
    read_all,
)


def test_memory_readings_agree_with_psutil():
    readings = MemoryReader().read()
    assert readings["ram_total"] == psutil.virtual_memory().total
    assert 0 < readings["ram_available"] <= readings["ram_total"]


def test_a_machine_without_a_sensor_reads_none_not_a_cool_value(monkeypatch):
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {}, raising=False)
    assert CpuTemperatureReader().read() == {"cpu_temp_c": None, "cpu_temp_high_c": None}
    assert PressureReader(paths=()).read()["memory_pressure_pct"] is None
    if NvmlReader().handle is None:  # no NVIDIA driver here: every GPU value unknown
        assert set(NvmlReader().read().values()) == {None}


def test_every_default_reader_contributes_its_keys():
    readings = read_all(default_readers())
    assert {"ram_available", "swap_used", "cpu_temp_c", "memory_pressure_pct", "gpu_temp_c"} <= readings.keys()
