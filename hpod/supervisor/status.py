"""What `hpod status` reports, and how it looks: jobs, daemons and the machine, read from the
queue alone so that it never waits on, or blocks, a running daemon's study, and imports
neither torch nor Optuna, so that it answers at once. Only a study on a shared storage is
read from that storage, for what each host is running and has finished."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from hpod.guard.sensors import default_readers, read_all
from hpod.storage import shown_url
from hpod.supervisor.liveness import is_dead
from hpod.supervisor.planning import time_left
from hpod.supervisor.queue import Queue
from hpod.supervisor.rows import DaemonEntry, JobState, QueuedJob

DAEMON_SILENT_S = 90  # a daemon whose heartbeat is older than this is shown as not alive


def job_status(job: QueuedJob, waits_for: int | None = None) -> dict:
    """A job's row of `hpod status`; `waits_for`: the job it may not be claimed before."""
    done, target = job.trials_finished, job.target
    running = job.state == JobState.RUNNING
    eta = time_left(job) if running else None
    in_trial = running or job.current_trial is not None  # only these parse their job file: 6 ms each
    return {
        "id": job.id,
        "study": job.study_name,
        "budget": job.budget,
        "horizon": f"h{job.horizon}",
        "state": job.state,
        "control": job.control,
        "priority": job.priority,
        "trials_finished": done,
        "n_trials": target,
        "best_val_loss": job.best_value,
        "constant_val_loss": job.baseline_value,  # the constant predictor's, on the same split
        "skill": skill(job.best_value, job.baseline_value),
        "best_arch": job.best_arch,
        "current_trial": job.current_trial,
        "current_epoch": job.current_epoch,
        "current_step": job.current_step,
        "epoch_steps": job.epoch_steps,
        "step_s": job.step_s,
        "attempts": job.attempts,
        "elapsed_s": job.run_s,
        "eta_s": eta,
        "seeds_finished": job.seeds_finished,
        "final_seeds": job.spec.search.final_seeds if in_trial else None,
        "last_error": job.last_error,
        "last_failure": job.last_failure,
        "waiting": job.waiting,
        "waits_for": waits_for,
        "storage": None if job.storage is None else shown_url(job.storage),  # no password in output
    }


def skill(loss: float | None, constant: float | None) -> float | None:
    """1 − loss / the constant predictor's: 0 means the model learnt nothing."""
    if loss is None or constant is None or constant <= 0:
        return None
    return 1 - loss / constant


def daemon_status(entry: DaemonEntry, now: float) -> dict:
    alive = now - entry.heartbeat < DAEMON_SILENT_S and not is_dead(entry.owner)
    return {
        "owner": entry.owner,
        "pid": entry.pid,
        "alive": alive,
        "started": entry.started,
        "paused_reason": entry.paused_reason,
        "paused_s": None if entry.paused_since is None else max(0.0, now - entry.paused_since),
        "readings": json.loads(entry.readings) if entry.readings else None,
        "window_opens": entry.window_opens,
    }


def collect(queue: Queue | None, storage: str | None = None, stop_file: Path | None = None) -> dict:
    """Everything status shows; the machine's readings come from a live daemon, else are read now;
    each host's trials of the studies on shared storages (every study of `storage`)."""
    now = time.time()
    queued = [] if queue is None else queue.jobs()
    waits = {} if queue is None else queue.waits()
    jobs = [job_status(j, waits.get(j.id)) for j in queued]
    daemons = [] if queue is None else [daemon_status(r, now) for r in queue.daemons()]
    live = [d for d in daemons if d["alive"]]
    machine = next((d["readings"] for d in live if d["readings"]), None) or read_all(default_readers())
    found = {"jobs": jobs, "daemons": daemons, "daemon_alive": bool(live), "machine": machine, "time": now}
    notice = None if queue is None else queue.latest_notice()
    found["notice"] = None if notice is None else notice.as_dict()
    found["stop_armed"] = None
    if stop_file is not None and stop_file.exists() and not live:
        found["stop_armed"] = stop_file.stat().st_mtime
    found["disk_free"] = None if queue is None else shutil.disk_usage(queue.path.parent).free
    urls = shared_storages(queued, storage)
    if urls:
        found["hosts"], found["unreachable"] = hosts_by_study(urls, None if storage else {j["study"] for j in jobs})
    return found


def shared_storages(jobs: list[QueuedJob], extra: str | None) -> list[str]:
    """The shared storages of jobs not yet ended, and the one asked for with --storage."""
    urls = [j.storage for j in jobs if j.storage is not None and not j.ended]
    return list(dict.fromkeys([*urls, *([] if extra is None else [extra])]))


def hosts_by_study(urls: list[str], only: set[str] | None = None) -> tuple[dict, list[str]]:
    """Study → host → its running and finished trials, read from each shared storage; and a
    line for each storage that cannot be reached now (the local jobs are shown all the same)."""
    import optuna

    from hpod.storage import is_unreachable, open_storage
    from hpod.supervisor.outage import root_error

    found, unreachable = {}, []
    for url in urls:
        try:
            storage = open_storage(url, create=False)
            summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
            found.update(host_counts(storage, summaries, only))
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            unreachable.append(f"storage {shown_url(url)} unreachable now ({root_error(exc)}): its hosts are not shown")
    return found, unreachable


def host_counts(storage, summaries: list, only: set[str] | None) -> dict[str, dict[str, dict[str, int]]]:
    import optuna

    from hpod.supervisor.hosts import trials_by_host

    return {
        summary.study_name: trials_by_host(optuna.load_study(study_name=summary.study_name, storage=storage))
        for summary in summaries
        if only is None or summary.study_name in only
    }
