"""Machine readings behind one small interface: each reader returns named values, and a value
it cannot read is None ("unknown", shown as n/a), never a guess and never an error."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

Readings = dict[str, float | None]
THERMAL_THROTTLE_BITS = 0x20 | 0x40  # NVML clocks-event reasons: software and hardware thermal slowdown


class Reader:
    """One source of readings."""

    def read(self) -> Readings:
        raise NotImplementedError


class MemoryReader(Reader):
    """RAM and swap, and the swap-in rate since the previous read (the sign of thrashing)."""

    def __init__(self) -> None:
        self.last: tuple[float, int] | None = None

    def read(self) -> Readings:
        ram, swap = psutil.virtual_memory(), psutil.swap_memory()
        now = time.monotonic()
        rate = None
        if self.last is not None and now > self.last[0]:
            rate = max(0.0, (swap.sin - self.last[1]) / (now - self.last[0]))
        self.last = (now, swap.sin)
        return {
            "ram_total": ram.total,
            "ram_available": ram.available,  # not .free: page cache can be given back
            "swap_total": swap.total,
            "swap_used": swap.used,
            "swap_in_bps": rate,
        }


class PressureReader(Reader):
    """Linux PSI: the share of the last 10 s in which some task stalled waiting for memory.
    The service's own cgroup is read first, so a limit set by systemd counts."""

    def __init__(self, paths: tuple[Path, ...] | None = None):
        self.paths = paths if paths is not None else (*cgroup_pressure_files(), Path("/proc/pressure/memory"))

    def read(self) -> Readings:
        for path in self.paths:
            try:
                text = path.read_text()
            except OSError:
                continue
            value = parse_pressure(text)
            if value is not None:
                return {"memory_pressure_pct": value}
        return {"memory_pressure_pct": None}


def parse_pressure(text: str) -> float | None:
    """`some avg10=…` of a PSI file."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "some":
            for field in fields[1:]:
                name, _, value = field.partition("=")
                if name == "avg10":
                    return float(value)
    return None


def cgroup_pressure_files() -> tuple[Path, ...]:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return ()
    unified = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    return tuple(Path("/sys/fs/cgroup") / u.lstrip("/") / "memory.pressure" for u in unified)


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


class NvmlReader(Reader):
    """GPU temperature, its slowdown threshold and thermal throttling, through NVML
    (`pip install hpod[gpu]`); without the package or a driver every value is unknown."""

    KEYS = ("gpu_temp_c", "gpu_temp_slowdown_c", "gpu_thermal_throttle")

    def __init__(self, index: int = 0):
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.nvml = pynvml
        except Exception:  # no package, no driver, no such GPU: all unknown
            self.handle = None

    def read(self) -> Readings:
        if self.handle is None:
            return dict.fromkeys(self.KEYS)
        nvml = self.nvml
        try:
            temp = nvml.nvmlDeviceGetTemperature(self.handle, nvml.NVML_TEMPERATURE_GPU)
            slowdown = nvml.nvmlDeviceGetTemperatureThreshold(self.handle, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
            reasons = nvml.nvmlDeviceGetCurrentClocksEventReasons(self.handle)
        except Exception:
            return dict.fromkeys(self.KEYS)
        throttle = float(bool(reasons & THERMAL_THROTTLE_BITS))
        return {"gpu_temp_c": temp, "gpu_temp_slowdown_c": slowdown, "gpu_thermal_throttle": throttle}


class CudaMemoryReader(Reader):
    """Free and total GPU memory from the CUDA driver, read only where torch is already loaded
    (a trial's worker), so that `hpod status` never pays for importing it."""

    def read(self) -> Readings:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return {"gpu_mem_free": None, "gpu_mem_total": None}
        free, total = torch.cuda.mem_get_info()
        return {"gpu_mem_free": free, "gpu_mem_total": total}


def default_readers() -> tuple[Reader, ...]:
    return (MemoryReader(), PressureReader(), CpuTemperatureReader(), NvmlReader(), CudaMemoryReader())


def read_all(readers: tuple[Reader, ...]) -> Readings:
    readings: Readings = {}
    for reader in readers:
        readings |= reader.read()
    return readings


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has ended since boot (`oom_kill` in
    /proc/vmstat, Linux 4.13 on); None where that is not known."""
    try:
        lines = Path("/proc/vmstat").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith("oom_kill ")), None)
