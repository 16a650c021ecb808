"""How far the estimate at enqueue lands from the study's actual duration, uncalibrated and
calibrated, side by side on the same studies: each study of jobs/tiny.yaml on the bundled data is
queued with the real `hpod enqueue` in a fresh state directory and run to its end by the real
daemon before the next is queued, so each estimate after the first is calibrated on the studies
before it. Per study it prints the timed steps' middle (what the estimate was before calibration,
which the same enqueue still records), the calibrated middle, and the actual duration (the
seconds a daemon held the job: search, seed runs and evaluation), with actual / estimate for each.

    python bench/calibration.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "jobs" / "tiny.yaml"
STUDIES = [("30K", "h1"), ("100K", "h5"), ("50K", "h5"), ("200K", "h1"), ("75K", "h1"), ("150K", "h5")]
SMOKE = [("20K", "h1"), ("30K", "h5")]


def hpod(state: Path, *args: str) -> str:
    command = [sys.executable, "-m", "hpod", *args, "--state-dir", str(state)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        sys.exit(f"hpod {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def held_seconds(state: Path, job_id: int) -> float:
    with sqlite3.connect(state / "queue.db") as db:
        held, job_state = db.execute("SELECT run_s, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if job_state != "done":
        sys.exit(f"job {job_id} ended {job_state}")
    return held


def run_study(state: Path, budget: str, horizon: str, extra: list[str]) -> dict:
    """Queue one study, run it to its end; its estimates and actual seconds."""
    [queued] = json.loads(hpod(state, "enqueue", "--budget", budget, "--horizon", horizon, "--job", str(JOB), *extra,
                               "--json"))  # fmt: skip
    estimate = queued["estimate"]
    hpod(state, "daemon", "--until-idle")
    low, high = estimate["study_s"]
    return {
        "study": queued["study"],
        "timed": math.sqrt(low * high),
        "calibrated": None if estimate["calibrated_run_s"] is None else estimate["expected_s"],
        "actual": held_seconds(state, queued["id"]),
        "basis": estimate["basis"],
    }


def ratio(actual: float, estimate: float | None) -> str:
    return "-" if estimate is None else f"{actual / estimate:.2f}"


def spread(ratios: list[float]) -> str:
    """The middle (geometric mean) of actual / estimate and its range."""
    middle = math.exp(statistics.fmean(math.log(r) for r in ratios))
    return f"middle {middle:.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} studies"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="two short studies (the bench's own test)")
    args = parser.parse_args()
    studies, extra = (SMOKE, ["--trials", "2", "--max-epochs", "1"]) if args.smoke else (STUDIES, [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget, horizon in studies:
            rows.append(run_study(Path(tmp) / "state", budget, horizon, extra))
            row = rows[-1]
            print(f"{row['study']:<16} timed {row['timed']:>7.1f} s  calibrated "
                  f"{'-' if row['calibrated'] is None else format(row['calibrated'], '.1f'):>7} s  "
                  f"actual {row['actual']:>7.1f} s", flush=True)  # fmt: skip
    print(f"\n{'study':<16} {'actual s':>9} {'timed s':>8} {'ratio':>6} {'calibrated s':>13} {'ratio':>6}")
    for row in rows:
        calibrated = "-" if row["calibrated"] is None else f"{row['calibrated']:.1f}"
        print(
            f"{row['study']:<16} {row['actual']:>9.1f} {row['timed']:>8.1f} {ratio(row['actual'], row['timed']):>6} "
            f"{calibrated:>13} {ratio(row['actual'], row['calibrated']):>6}"
        )
    judged = [row for row in rows if row["calibrated"] is not None]
    print(f"\nactual / timed middle, on the studies calibrated: {spread([r['actual'] / r['timed'] for r in judged])}")
    print(f"actual / calibrated middle: {spread([r['actual'] / r['calibrated'] for r in judged])}")
    for row in judged:
        print(f"  {row['study']}: {row['basis']}")


if __name__ == "__main__":
    main()
