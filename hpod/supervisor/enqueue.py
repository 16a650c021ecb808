"""What enqueueing checks of each study before it is queued (its grid, its memory, its data, how
long it will take at this machine's measured speed), and the rows it queues. A queued row keeps
its job file's text as it was at enqueue time, its data file's absolute path and checksum, and
the command-line overrides, so later edits of jobs/ or a different working directory do not
change what a queued job runs."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Collection
from pathlib import Path

import optuna

from hpod.errors import HpodError
from hpod.job import JobSpec
from hpod.study.budget import format_budget
from hpod.study.calibration import Calibration
from hpod.study.duration import Estimate, duration
from hpod.study.estimate import Timing, estimate_study
from hpod.study.plan import StudyPlan, plan_study
from hpod.trial.data import checksum, data_file, data_shape, load_dataset
from hpod.trial.device import pick_device
from hpod.trial.memory import job_limit, require_feasible

log = logging.getLogger(__name__)


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
    calibration: Calibration | None = None,
    skip: Collection[str] = (),
    announce: Callable[[str], None] | None = None,
) -> list[dict]:
    """Queue rows for every budget × horizon, after checking each: grid, memory, data, splits,
    and, given the step times known (updated with those timed now) and what this machine
    measured of the job file's earlier runs, how long it will take (refused past
    `search.max_days` unless forced). With `search.transfer` and several budgets,
    they are a ladder: per horizon, in ascending budget, each row waits for the one below
    (`after_row`, the index of that row). Studies named in `skip` (complete ones) get no row;
    `announce` is told what is being timed."""
    ladder = job.search.transfer and len(set(budgets)) > 1
    order = sorted(budgets) if ladder else budgets
    planned = [plan_study(job, b, h) for b in order for h in horizons]
    plans = [fit_to_memory(plan, force) for plan in planned if plan.name not in skip]
    datasets = {horizon: load_dataset(job.data, horizon) for horizon in horizons}
    estimates = {}
    if step_times is not None:
        device = pick_device(job.train.device)
        timing = Timing.start(job_limit(job.guard, device).bytes, announce=announce)  # one bound for the enqueue
        estimates = {p.name: estimate_study(p, datasets[p.horizon], step_times, timing, calibration) for p in plans}
        for plan in plans:
            if estimates[plan.name] is not None:
                check_duration(plan, estimates[plan.name], force)
    path = data_file(job.data)
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
        "no_ladder": int(not job.search.transfer),
    }
    rows = [
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
    if ladder:
        for index, plan in enumerate(plans):
            below = [i for i, p in enumerate(plans[:index]) if p.horizon == plan.horizon and p.budget < plan.budget]
            rows[index]["after_row"] = below[-1] if below else None
    return rows


def complete_studies(job: JobSpec, budgets: list[int], horizons: list[int], storage_url: str) -> dict[str, int]:
    """The studies of this request that have their target's finished trials already on the
    storage → that count: queueing one again would only re-time it."""
    from hpod.storage import open_storage
    from hpod.study.plan import finished_count

    names = {plan_study(job, b, h).name for b in budgets for h in horizons}
    if storage_url.startswith("sqlite:///") and not Path(storage_url.removeprefix("sqlite:///")).exists():
        return {}
    storage = open_storage(storage_url, create=False)
    found = {}
    for name in names & set(optuna.get_all_study_names(storage)):
        count = finished_count(optuna.load_study(study_name=name, storage=storage))
        if count >= job.search.n_trials:
            found[name] = count
    return found


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
