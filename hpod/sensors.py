"""Machine readings behind one small interface: each reader returns named values, and a value
it cannot read is None ("unknown", shown as n/a), never a guess and never an error."""

from __future__ import annotations

import psutil

Readings = dict[str, float | None]


class Reader:
    """One source of readings."""

    def read(self) -> Readings:
        raise NotImplementedError


class MemoryReader(Reader):
    def read(self) -> Readings:
        ram, swap = psutil.virtual_memory(), psutil.swap_memory()
        return {
            "ram_total": ram.total,
            "ram_available": ram.available,  # not .free: page cache can be given back
            "swap_total": swap.total,
            "swap_used": swap.used,
        }


class CpuTemperatureReader(Reader):
    """The hottest CPU sensor psutil knows (coretemp, k10temp, …) and its own `high` mark."""

    def read(self) -> Readings:
        try:
            sensors = psutil.sensors_temperatures()
        except (AttributeError, OSError):
            sensors = {}
        entries = [e for entries in sensors.values() for e in entries if e.current is not None]
        if not entries:
            return {"cpu_temp_c": None, "cpu_temp_high_c": None}
        hottest = max(entries, key=lambda e: e.current)
        return {"cpu_temp_c": hottest.current, "cpu_temp_high_c": hottest.high or None}


DEFAULT_READERS: tuple[Reader, ...] = (MemoryReader(), CpuTemperatureReader())


def read_all(readers: tuple[Reader, ...] = DEFAULT_READERS) -> Readings:
    readings: Readings = {}
    for reader in readers:
        readings |= reader.read()
    return readings
