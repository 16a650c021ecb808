"""What a queued job holds, the study plan it stands for, what may be imported into it, and when
its daemon's deaths fail it.

A job keeps its job file's text as it was at enqueue time, its data file's absolute path and
checksum, and the command-line overrides, so later edits of jobs/ or a different working
directory do not change what a queued job runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from hpod.errors import HpodError
from hpod.job import JobSpec, parse_job
from hpod.results.importer import import_trials, load_candidates, summary
from hpod.state import StateDir, open_storage, shown_url
from hpod.study.budget import format_budget
from hpod.study.estimate import Estimate, duration, estimate_study
from hpod.study.plan import StudyPlan, best_trial, finished_count, open_study, plan_study
from hpod.supervisor.queue import Queue
from hpod.trial.data import bundled_path, data_shape, load_dataset
from hpod.trial.device import pick_device
from hpod.trial.grid import Arch
from hpod.trial.memory import job_limit, require_feasible

log = logging.getLogger(__name__)


def data_file(job: JobSpec) -> Path:
    return bundled_path() if job.data.path is None else Path(job.data.path).absolute()


def checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_jobs(
    job: JobSpec,
    budgets: list[int],
    horizons: list[int],
    *,
    storage: str | None = None,
    priority: int = 0,
    timeout_h: float | None = None,
    force: bool = False,
    step_times: dict | None = None,
) -> list[dict]:
    """Queue rows for every budget × horizon, after checking each: grid, memory, data, splits,
    and, given the step times known (updated with those timed now), how long it will take
    (refused past `search.max_days` unless forced)."""
    plans = [fit_to_memory(plan_study(job, b, h), force) for b in budgets for h in horizons]
    datasets = {horizon: load_dataset(job.data, horizon) for horizon in horizons}
    estimates = {}
    if step_times is not None:
        estimates = {p.name: estimate_study(p, datasets[p.horizon], step_times) for p in plans}
        for plan in plans:
            if estimates[plan.name] is not None:
                check_duration(plan, estimates[plan.name], force)
    path = data_file(job)
    base = {
        "job_name": job.name,
        "job_text": job.text,
        "data_path": None if job.data.path is None else str(path),
        "data_sha256": checksum(path),
        "storage": storage,
        "n_trials": job.search.n_trials,
        "max_epochs": job.train.max_epochs,
        "priority": priority,
        "timeout_s": None if timeout_h is None else timeout_h * 3600,
        "memory_limit_gib": job.guard.memory_limit_gib,
    }
    return [
        {
            **base,
            "study_name": p.name,
            "budget": p.budget,
            "horizon": p.horizon,
            "dropped_archs": json.dumps(sorted(p.excluded)),
            "estimate": json.dumps(estimates[p.name].as_dict()) if estimates.get(p.name) else None,
        }
        for p in plans
    ]


def check_duration(plan: StudyPlan, estimate: Estimate, force: bool) -> None:
    """Refuse a study expected to run past `search.max_days` at this machine's measured speed."""
    limit_days = plan.job.search.max_days
    if estimate.expected_s <= limit_days * 86400:
        return
    message = (
        f"{plan.name}: about {duration(estimate.expected_s)} at this machine's measured speed ({estimate.describe()}), "
        f"past search.max_days {limit_days:g}; lower --trials or --max-epochs, a smaller budget, or --force"
    )
    if not force:
        raise HpodError(message)
    log.warning("%s (queued anyway: --force)", message)


def fit_to_memory(plan: StudyPlan, force: bool) -> StudyPlan:
    """Leave out the architectures that cannot train even at micro-batch 1 within the memory
    limit; refuse the study when none can, unless forced (its storage may be shared with a
    bigger machine, which then decides for itself)."""
    device = pick_device(plan.job.train.device)
    limit = job_limit(plan.job.guard, device)
    try:
        kept = require_feasible(plan.grid, data_shape(plan.job.data), device, limit, format_budget(plan.budget))
    except HpodError as exc:
        if not force:
            raise
        log.warning("%s (queued anyway: --force)", exc)
        return plan
    dropped = {e.arch.key for e in plan.grid} - {e.arch.key for e in kept}
    return dataclasses.replace(plan, excluded=frozenset(dropped))


def plan_from_row(row: dict) -> StudyPlan:
    """The study plan of a queued job, from what the queue kept; refuses changed data."""
    job = parse_job(row["job_text"], source=f"job {row['id']}", default_name=row["job_name"])
    job = job.with_overrides(
        data=row["data_path"],
        trials=row["n_trials"],
        max_epochs=row["max_epochs"],
        memory_limit_gib=row["memory_limit_gib"],
    )
    path = data_file(job)
    if not path.is_file():
        raise HpodError(f"data file {path} is gone since job {row['id']} was queued")
    if checksum(path) != row["data_sha256"]:
        raise HpodError(f"data file {path} changed since job {row['id']} was queued (sha256 differs)")
    excluded = frozenset(json.loads(row["dropped_archs"] or "[]"))
    return dataclasses.replace(plan_study(job, row["budget"], row["horizon"]), excluded=excluded)


def job_summary(row: dict) -> dict:
    """What `hpod show` says of a job, queued or not: its settings, grid and estimate."""
    job = parse_job(row["job_text"], source=f"job {row['id']}", default_name=row["job_name"])
    search, train = job.search, job.train
    grid = plan_study(job.with_overrides(data=row["data_path"]), row["budget"], row["horizon"]).grid
    return {
        "settings": {
            "trials": row["n_trials"],
            "epochs": list(search.epochs),
            "max_epochs": row["max_epochs"],
            "pruner": search.pruner,
            "patience": train.patience,
            "effective_batch": train.effective_batch,
            "final_seeds": search.final_seeds,
            "device": train.device,
            "priority": row["priority"],
            "timeout_h": None if row["timeout_s"] is None else row["timeout_s"] / 3600,
            "storage": "SQLite in the state directory" if row["storage"] is None else shown_url(row["storage"]),
            "on_event": job.on_event,
        },
        "memory": {"grid_size": len(grid), "dropped_at_enqueue": json.loads(row["dropped_archs"] or "[]")},
        "estimate": None if row["estimate"] is None else json.loads(row["estimate"]),
    }


def check_crashes(row: dict) -> None:
    """A job whose daemon died holding it `search.max_crashes` times fails, rather than bring a
    restarted daemon (systemd's Restart=) back into the same crash forever."""
    limit = parse_job(row["job_text"], source=row["study_name"]).search.max_crashes
    if row["crashes"] >= limit:
        raise HpodError(
            f"the daemon holding job {row['id']} died {row['crashes']} times (search.max_crashes is {limit}); "
            "failed so that restarts do not loop; re-enqueue it with --force to try again"
        )


def import_into_job(state: StateDir, job_id: int, paths: list[Path], exclude: set[str]) -> list[str]:
    """Prior trials into a queued job's study (`hpod import`); returns the summary lines. Every
    file is checked before the study is opened, so a refusal writes nothing."""
    queue = Queue.existing(state)
    row = queue.job(job_id)
    if row["state"] == "running":  # its workers count toward the target too: trials could pass it
        raise HpodError(
            f"job {job_id} is running: `hpod pause {job_id}`, import, then `hpod resume {job_id}` "
            "(trials added under a running search could take it past its target)"
        )
    plan = plan_from_row(row)
    for key in exclude:
        Arch.from_key(key)
    candidates = load_candidates(paths)
    study = open_study(plan, open_storage(state.storage_url(row["storage"])))
    outcome = import_trials(study, plan, candidates, exclude)
    best = best_trial(study)
    arch = None if best is None else best.params["arch"]
    queue.refresh_summary(job_id, finished_count(study), None if best is None else best.value, arch)
    return summary(outcome)
