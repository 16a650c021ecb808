"""Each benchmark runs at its smallest size and prints its ratios (the numbers are not checked:
benchmarks measure, tests do not time)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

EXPECTED = {
    "throughput.py": ("dense matmul", "ratio"),
    "pruning.py": ("compute ratio (epochs, none / hyperband)", "best-loss difference"),
    "overhead.py": ("hpod daemon path", "ratio", "hpod status with"),
    "parallel.py": ("trials per hour", "workers x 1 thread", "PostgreSQL"),
    "transfer.py": ("independent / ladder", "1-epoch+K", "sources"),
    "calibration.py": ("actual / calibrated middle", "calibrated on"),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_each_benchmark_runs_at_its_smallest_size(script):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for text in EXPECTED[script]:
        assert text in out.stdout, out.stdout
