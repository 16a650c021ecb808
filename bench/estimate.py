"""The estimate at enqueue against what it stands for, side by side in one process so a busy
machine slows both alike:

1. for the smallest, median and largest architectures of jobs/tiny.yaml at 100K (h5, bundled
   data), the epoch the estimate predicts and one epoch trained;
2. for those of the default job at 20M and 100M (h1), a micro-step timed on the full model and
   fitted from its one-layer model and the deepest one within half the full model's
   predicted peak (what the estimate does when the full model's step needs more memory than
   timing may use), with each method's seconds and measured peak.

    python bench/estimate.py
"""

from __future__ import annotations

import ctypes
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpod.job import load_job
from hpod.study.estimate import Timing, epoch_seconds, layer_fit, representative, step_time, timed_rows
from hpod.study.plan import plan_study
from hpod.trial.data import load_dataset
from hpod.trial.memory import GIB, estimate
from hpod.trial.probe import PeakMeter
from hpod.trial.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent


def epochs_against_estimate() -> None:
    job = load_job(ROOT / "jobs" / "tiny.yaml")
    dataset = load_dataset(job.data, 5)
    plan = plan_study(job, 100_000, 5)
    print(f"{'architecture':<18} {'estimated s':>12} {'measured s':>11} {'ratio':>6}")
    for entry in representative(plan.grid):
        estimated = epoch_seconds(plan, entry, dataset, "cpu", {}, Timing.start(8 * GIB))
        batch = job.train.effective_batch
        config = TrainConfig(1e-3, 1e-4, 10, epochs=1, effective_batch=batch, micro_batch=batch, patience=5)
        trainer = Trainer(entry.arch.model_config(dataset.shape, dropout=0.1), config, dataset)
        start = time.perf_counter()
        trainer.fit()
        measured = time.perf_counter() - start
        print(f"{entry.arch.key:<18} {estimated:>12.2f} {measured:>11.2f} {estimated / measured:>6.2f}")


def measured(run):
    """(result, wall seconds, peak GiB added) of run()."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory the last model freed goes back, so its peak is not reused
    meter = PeakMeter("cpu")
    meter.reset()
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start, meter.peak() / GIB


def compare(entry, dataset, train, micro: int) -> str:
    """One row: the full model's step against the fit, each with its wall time and peak."""
    roomy = Timing.start(64 * GIB)
    rows = timed_rows(entry.arch, dataset.shape, micro, "cpu", roomy)
    bound = Timing(estimate(entry.arch, entry.params, dataset.shape, rows, "cpu").peak // 2, roomy.deadline)
    found, fit_wall, fit_peak = measured(lambda: layer_fit(entry.arch, micro, dataset, train, "cpu", bound))
    full, full_wall, full_peak = measured(lambda: step_time(entry.arch, rows, micro, dataset, train, "cpu"))
    whole = full.compute * 2 + full.update  # two micro-steps per optimizer step
    head = f"{entry.arch.key:<22} {whole:>7.3f}"
    if found is None:
        return f"{head} {'-':>7} {'-':>5} {'-':>5} {full_wall:>8.1f} s {full_peak:>5.2f}"
    fit, depth = found
    fitted = fit.compute * 2 + fit.update
    return (
        f"{head} {fitted:>7.3f} {fitted / whole:>5.2f} {depth:>5} "
        f"{full_wall:>8.1f} s {full_peak:>5.2f} {fit_wall:>7.1f} s {fit_peak:>5.2f}"
    )


def layer_fit_against_full() -> None:
    job = load_job(ROOT / "jobs" / "architectural_search.yaml")
    dataset = load_dataset(job.data, 1)
    print(f"\n{'architecture':<22} {'full s':>7} {'fit s':>7} {'ratio':>5} {'depth':>5}", end=" ")
    print(f"{'full: wall, GiB':>16} {'fit: wall, GiB':>15}")
    for budget in (20_000_000, 100_000_000):
        for entry in representative(plan_study(job, budget, 1).grid):
            print(compare(entry, dataset, job.train, 64), flush=True)


if __name__ == "__main__":
    epochs_against_estimate()
    layer_fit_against_full()
