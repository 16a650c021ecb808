"""The estimate at enqueue against a measured epoch: for the smallest, median and largest
architectures of jobs/tiny.yaml at 100K (h5, bundled data), the epoch the estimate predicts
and one epoch trained, side by side in one process so a busy machine slows both alike.

    python bench/estimate.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpod.job import load_job
from hpod.study.estimate import epoch_seconds, representative
from hpod.study.plan import plan_study
from hpod.trial.data import load_dataset
from hpod.trial.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    job = load_job(ROOT / "jobs" / "tiny.yaml")
    dataset = load_dataset(job.data, 5)
    plan = plan_study(job, 100_000, 5)
    print(f"{'architecture':<18} {'estimated s':>12} {'measured s':>11} {'ratio':>6}")
    for entry in representative(plan.grid):
        estimated = epoch_seconds(plan, entry, dataset, "cpu", {})
        batch = job.train.effective_batch
        config = TrainConfig(1e-3, 1e-4, 10, epochs=1, effective_batch=batch, micro_batch=batch, patience=5)
        trainer = Trainer(entry.arch.model_config(dataset.shape, dropout=0.1), config, dataset)
        start = time.perf_counter()
        trainer.fit()
        measured = time.perf_counter() - start
        print(f"{entry.arch.key:<18} {estimated:>12.2f} {measured:>11.2f} {estimated / measured:>6.2f}")


if __name__ == "__main__":
    main()
