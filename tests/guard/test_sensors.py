"""Sensors: real readings where the machine has them, None (never "cool") where it does not."""

from __future__ import annotations

import math

import psutil
import pytest

from hpod.guard.sensors import (
    CpuTemperatureReader,
    MemoryReader,
    NvmlReader,
    PressureReader,
    Reader,
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


READERS = sorted(Reader.__subclasses__(), key=lambda kind: kind.__name__)  # a new reader is covered as it lands


@pytest.mark.parametrize("kind", READERS, ids=lambda kind: kind.__name__)
def test_every_reader_keeps_the_contract(kind):
    """Named values that are finite, non-negative numbers or None; the same names on every read;
    never an exception (a missing sensor is None)."""
    reader = kind()
    first, second = reader.read(), reader.read()
    assert first and first.keys() == second.keys()
    for value in (*first.values(), *second.values()):
        assert value is None or (isinstance(value, int | float) and not isinstance(value, bool)), first
        assert value is None or (math.isfinite(value) and value >= 0), first


def test_the_default_readers_are_every_reader_and_name_each_value_once():
    readers = default_readers()
    assert {type(r) for r in readers} == set(READERS)
    names = [name for reader in readers for name in reader.read()]
    assert len(names) == len(set(names)), names
