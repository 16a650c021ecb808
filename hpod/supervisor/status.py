"""What `hpod status` reports, and how it looks: jobs, daemons and the machine, read from the
queue alone so that it never waits on, or blocks, a running daemon's study, and imports
neither torch nor Optuna, so that it answers at once. Only a study on a shared storage is
read from that storage, for what each host is running and has finished."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

from rich.table import Table

from hpod.guard.sensors import default_readers, read_all
from hpod.state import shown_url
from hpod.study.budget import format_budget
from hpod.supervisor.liveness import is_dead
from hpod.supervisor.queue import Queue
from hpod.tables import Column, fitted

DAEMON_SILENT_S = 90  # a daemon whose heartbeat is older than this is shown as not alive
ENDED = ("done", "failed", "cancelled")
SHOWN_PER_GROUP = 20  # queued jobs next in line, and finished jobs latest first, in the table
DISK_LOW = 32 * 2**20  # free bytes under which status says the state directory's disk is full


def job_status(row: dict) -> dict:
    done, target = row["trials_finished"], row["n_trials"]
    eta = None
    if row["state"] == "running" and 0 < done < target:
        eta = row["run_s"] / done * (target - done)
    elif row["state"] == "running" and done < target and None not in (row["step_s"], row["epoch_steps"]):
        eta = first_trial_eta(row, target - done)
    return {
        "id": row["id"],
        "study": row["study_name"],
        "budget": row["budget"],
        "horizon": f"h{row['horizon']}",
        "state": row["state"],
        "control": row["control"],
        "priority": row["priority"],
        "trials_finished": done,
        "n_trials": target,
        "best_val_loss": row["best_value"],
        "constant_val_loss": row["baseline_value"],  # the constant predictor's, on the same split
        "skill": skill(row["best_value"], row["baseline_value"]),
        "best_arch": row["best_arch"],
        "current_trial": row["current_trial"],
        "current_epoch": row["current_epoch"],
        "current_step": row["current_step"],
        "epoch_steps": row["epoch_steps"],
        "step_s": row["step_s"],
        "attempts": row["attempts"],
        "elapsed_s": row["run_s"],
        "eta_s": eta,
        "last_error": row["last_error"],
        "last_failure": row["last_failure"],
        "waiting": row["waiting"],
        "storage": None if row["storage"] is None else shown_url(row["storage"]),  # no password in output
    }


def first_trial_eta(row: dict, trials_left: int) -> float | None:
    """Before any trial has finished: the running trial's measured step time × its planned
    steps, less the steps it has run, plus as many more trials (early stopping and pruning
    make it an upper bound)."""
    if row["trial_epochs"] is None:
        return None
    trial_steps = row["trial_epochs"] * row["epoch_steps"]
    ran = (row["current_epoch"] or 0) * row["epoch_steps"] + (row["current_step"] or 0)
    return row["step_s"] * (max(0, trial_steps - ran) + (trials_left - 1) * trial_steps)


def skill(loss: float | None, constant: float | None) -> float | None:
    """1 − loss / the constant predictor's: 0 means the model learnt nothing."""
    if loss is None or constant is None or constant <= 0:
        return None
    return 1 - loss / constant


def daemon_status(row: dict, now: float) -> dict:
    alive = now - row["heartbeat"] < DAEMON_SILENT_S and not is_dead(row["owner"])
    return {
        "owner": row["owner"],
        "pid": row["pid"],
        "alive": alive,
        "started": row["started"],
        "paused_reason": row["paused_reason"],
        "paused_s": None if row["paused_since"] is None else max(0.0, now - row["paused_since"]),
        "readings": json.loads(row["readings"]) if row["readings"] else None,
        "window_opens": row["window_opens"],
    }


def collect(queue: Queue | None, storage: str | None = None, stop_file: Path | None = None) -> dict:
    """Everything status shows; the machine's readings come from a live daemon, else are read now;
    each host's trials of the studies on shared storages (every study of `storage`)."""
    now = time.time()
    rows = [] if queue is None else queue.jobs()
    jobs = [job_status(r) for r in rows]
    daemons = [] if queue is None else [daemon_status(r, now) for r in queue.daemons()]
    live = [d for d in daemons if d["alive"]]
    machine = next((d["readings"] for d in live if d["readings"]), None) or read_all(default_readers())
    found = {"jobs": jobs, "daemons": daemons, "daemon_alive": bool(live), "machine": machine, "time": now}
    found["notice"] = None if queue is None else queue.latest_notice()
    found["stop_armed"] = None
    if stop_file is not None and stop_file.exists() and not live:
        found["stop_armed"] = stop_file.stat().st_mtime
    found["disk_free"] = None if queue is None else shutil.disk_usage(queue.path.parent).free
    urls = shared_storages(rows, storage)
    if urls:
        found["hosts"], found["unreachable"] = hosts_by_study(urls, None if storage else {j["study"] for j in jobs})
    return found


def shared_storages(rows: list[dict], extra: str | None) -> list[str]:
    """The shared storages of jobs not yet ended, and the one asked for with --storage."""
    urls = [r["storage"] for r in rows if r["storage"] is not None and r["state"] not in ENDED]
    return list(dict.fromkeys([*urls, *([] if extra is None else [extra])]))


def hosts_by_study(urls: list[str], only: set[str] | None = None) -> tuple[dict, list[str]]:
    """Study → host → its running and finished trials, read from each shared storage; and a
    line for each storage that cannot be reached now (the local jobs are shown all the same)."""
    import optuna

    from hpod.state import is_unreachable, open_storage
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


HOST_COLUMNS = (Column("study", "left"), Column("host", "left"), Column("running"), Column("finished"))


def hosts_table(hosts: dict[str, dict[str, dict[str, int]]], width: int | None = None) -> Table:
    rows = [
        [study, host, str(counts["running"]), str(counts["finished"])]
        for study, per_host in hosts.items()
        for host, counts in per_host.items()
    ]
    return fitted(HOST_COLUMNS, rows, width, title="hosts on shared storages")


def shown_jobs(jobs: list[dict], show_all: bool) -> tuple[list[dict], str | None]:
    """Every running, paused and interrupted job, and the first queued and last finished ones
    (a table of a thousand rows is neither read nor fast); what was left out, in words."""
    if show_all:
        return jobs, None
    ended = ENDED
    queued = [j for j in jobs if j["state"] == "queued"]
    finished = [j for j in jobs if j["state"] in ended]
    kept = {j["id"] for j in queued[:SHOWN_PER_GROUP]} | {j["id"] for j in finished[-SHOWN_PER_GROUP:]}
    shown = [j for j in jobs if j["state"] not in ("queued", *ended) or j["id"] in kept]
    hidden_queued = max(0, len(queued) - SHOWN_PER_GROUP)
    hidden_finished = max(0, len(finished) - SHOWN_PER_GROUP)
    if not hidden_queued and not hidden_finished:
        return shown, None
    return shown, f"{hidden_queued} more queued and {hidden_finished} older finished jobs: hpod status --all"


STATUS_COLUMNS = (
    Column("id"),
    Column("budget"),
    Column("h"),
    Column("state", "left"),
    Column("trials"),
    Column("val loss"),
    Column("skill", rank=2),
    Column("best arch", "left"),
    Column("now", "left", rank=3),
    Column("elapsed", rank=4),
    Column("ETA"),
    Column("study", "left", rank=5),
)


def status_table(status: dict, show_all: bool = False, width: int | None = None) -> Table:
    """The jobs, with the columns a morning look needs kept whole at any width: id, budget,
    horizon, state, trials, best loss and architecture, ETA; the rest go first as it narrows."""
    jobs, hidden = shown_jobs(status["jobs"], show_all)
    rows = [status_row(job) for job in jobs]
    return fitted(STATUS_COLUMNS, rows, width, title="hpod jobs", caption=hidden)


def status_row(job: dict) -> list[str]:
    now = "-"
    if job["current_trial"] is not None:
        epoch = f" epoch {job['current_epoch']}" if job["current_epoch"] is not None else ""
        step = (
            f" step {job['current_step'] + 1}/{job['epoch_steps']}" if epoch and job["current_step"] is not None else ""
        )
        now = f"trial {job['current_trial']}{epoch}{step}"
    return [
        str(job["id"]), format_budget(job["budget"]), job["horizon"],
        f"{job['control']}ing" if job["control"] else job["state"],
        f"{job['trials_finished']}/{job['n_trials']}", _loss(job["best_val_loss"]),
        "-" if job["skill"] is None else f"{job['skill']:+.3f}", job["best_arch"] or "-",
        now, short_duration(job["elapsed_s"]), short_duration(job["eta_s"]), job["study"],
    ]  # fmt: skip


def machine_line(status: dict) -> str:
    m = status["machine"]
    parts = [
        f"RAM {_gib(m['ram_total'] - m['ram_available'])} used, {_gib(m['ram_available'])} available",
        f"swap {_gib(m['swap_used'])} used" if m["swap_total"] else "no swap",
        f"CPU {m['cpu_temp_c']:.0f} °C" if m.get("cpu_temp_c") is not None else "CPU temperature n/a",
        f"memory pressure {m['memory_pressure_pct']:.0f}%"
        if m.get("memory_pressure_pct") is not None
        else "memory pressure n/a",
    ]
    if m.get("gpu_temp_c") is not None:
        parts.append(f"GPU {m['gpu_temp_c']:.0f} °C" + (" (throttling)" if m.get("gpu_thermal_throttle") else ""))
    if m.get("gpu_mem_free") is not None:
        parts.append(f"GPU memory {_gib(m['gpu_mem_free'])} free")
    live = [d for d in status["daemons"] if d["alive"]]
    if not live:
        parts.append("daemon not running")
    parts += [f"daemon pid {d['pid']} {daemon_state(d, status['time'])}" for d in live]
    return " · ".join(parts)


def daemon_state(daemon: dict, now: float) -> str:
    """running; waiting for the run window (opens 22:00, in 3h25m); or paused and why."""
    paused, opens = daemon["paused_reason"], daemon["window_opens"]
    if paused is None:
        return "running"
    if opens is not None:
        at = dt.datetime.fromtimestamp(opens)
        return f"{paused} (opens {at:%H:%M}, in {short_duration(max(0.0, opens - now))})"
    return f"paused: {paused}, {short_duration(daemon['paused_s'])}"


def notice_lines(status: dict) -> list[str]:
    """What needs a person's eye beyond the table: a stop waiting for the next daemon, what the
    last daemon said as it went, and why jobs or their latest trials failed."""
    lines = []
    if status.get("stop_armed") is not None:
        at = dt.datetime.fromtimestamp(status["stop_armed"])
        lines.append(f"STOP_HPO is set (since {at:%Y-%m-%d %H:%M}): the next daemon stops at once; delete it to run")
    notice = status.get("notice")
    if notice is not None and not status["daemon_alive"]:
        lines.append(f"{dt.datetime.fromtimestamp(notice['time']):%Y-%m-%d %H:%M} {notice['text']}")
    free = status.get("disk_free")
    if free is not None and free < DISK_LOW:
        lines.append(f"disk full under the state directory ({free / 2**20:.1f} MiB free): trials wait to write")
    lines.extend(status.get("unreachable", []))
    for job in status["jobs"]:
        if job["waiting"] and job["state"] == "running":
            lines.append(f"job {job['id']}: {job['waiting']}; its trials wait")
        if job["state"] == "failed" and job["last_error"]:
            lines.append(f"job {job['id']} failed: {job['last_error']}")
        elif job["last_failure"] and job["state"] not in ENDED:
            lines.append(f"job {job['id']}: {job['last_failure']}")
    return lines


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def short_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
