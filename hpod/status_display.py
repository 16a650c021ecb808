"""How `hpod status` looks: the jobs table fitted to the terminal, the hosts on shared storages,
the machine's line and the notices. Reads the data status.py collects; imports neither torch
nor Optuna, so that status answers at once."""

from __future__ import annotations

import datetime as dt

from rich.console import Group
from rich.table import Table
from rich.text import Text

from hpod.study.budget import format_budget
from hpod.study.duration import short_duration
from hpod.supervisor.rows import ENDED, JobState
from hpod.tables import Column, fitted

SHOWN_PER_GROUP = 20  # queued jobs next in line, and finished jobs latest first, in the table
DISK_LOW = 32 * 2**20  # free bytes under which status says the state directory's disk is full


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
    queued = [j for j in jobs if j["state"] == JobState.QUEUED]
    finished = [j for j in jobs if j["state"] in ENDED]
    kept = {j["id"] for j in queued[:SHOWN_PER_GROUP]} | {j["id"] for j in finished[-SHOWN_PER_GROUP:]}
    shown = [j for j in jobs if j["state"] not in (JobState.QUEUED, *ENDED) or j["id"] in kept]
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
    Column("best val"),
    Column("skill", rank=2),
    Column("best arch", "left"),
    Column("now", "left", rank=1),  # dropped last while it has content: a running trial's only progress
    Column("elapsed", rank=4),
    Column("ETA"),
    Column("study", "left", rank=5),
)


def status_view(status: dict, show_all: bool, width: int | None) -> list[Table | Text]:
    """Everything `hpod status` prints, in order: what `--watch` redraws in place."""
    tables = [
        status_table(status, show_all, width),
        *([hosts_table(status["hosts"], width)] if status.get("hosts") else []),
    ]
    return [*tables, *(Text.from_markup(line) for line in [machine_line(status), *notice_lines(status)])]


def watched(status: dict, show_all: bool, width: int | None, every_s: float) -> Group:
    """The status view with the time it was read, as `watch` heads its screen."""
    read = dt.datetime.now().astimezone().strftime("%H:%M:%S")
    return Group(
        Text(f"every {every_s:g} s, read at {read} (Ctrl-C to leave)", style="dim"),
        *status_view(status, show_all, width),
    )


def status_table(status: dict, show_all: bool = False, width: int | None = None) -> Table:
    """The jobs, with the columns a morning look needs kept whole at any width: id, budget,
    horizon, state, trials, best loss and architecture, ETA; the rest go first as it narrows."""
    jobs, hidden = shown_jobs(status["jobs"], show_all)
    rows = [status_row(job) for job in jobs]
    return fitted(STATUS_COLUMNS, rows, width, title="hpod jobs", caption=hidden)


def status_row(job: dict) -> list[str]:
    return [
        str(job["id"]), format_budget(job["budget"]), job["horizon"],
        job_state(job),
        f"{job['trials_finished']}/{job['n_trials']}", _loss(job["best_val_loss"]),
        "-" if job["skill"] is None else f"{job['skill']:+.3f}", job["best_arch"] or "-",
        now_cell(job), short_duration(job["elapsed_s"]), short_duration(job["eta_s"]), job["study"],
    ]  # fmt: skip


def now_cell(job: dict) -> str:
    """What a running job is doing, terse so that it fits at 80 columns: trial t (or seed run
    k of n), epoch e and step (t13 e7 41/400, seed 2/3 e4 17/400), or its evaluation."""
    search_over = job["trials_finished"] >= job["n_trials"]
    if job["current_trial"] is None:
        evaluating = job["state"] == JobState.RUNNING and search_over and job["seeds_finished"] >= job["final_seeds"]
        return "evaluation" if evaluating else "-"
    epoch = f" e{job['current_epoch']}" if job["current_epoch"] is not None else ""
    step = f" {job['current_step'] + 1}/{job['epoch_steps']}" if epoch and job["current_step"] is not None else ""
    run = f"seed {job['seeds_finished'] + 1}/{job['final_seeds']}" if search_over else f"t{job['current_trial']}"
    return f"{run}{epoch}{step}"


def job_state(job: dict) -> str:
    """Its state, a person's pending request (pausing), or what it waits for before its claim."""
    if job["control"]:
        return f"{job['control']}ing"
    if job.get("waits_for") is not None:
        return f"waiting for job {job['waits_for']}"
    return job["state"]


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
        if job["waiting"] and job["state"] == JobState.RUNNING:
            lines.append(f"job {job['id']}: {job['waiting']}; its trials wait")
        if job["state"] == JobState.FAILED and job["last_error"]:
            lines.append(f"job {job['id']} failed: {job['last_error']}")
        elif job["last_failure"] and job["state"] not in ENDED:
            lines.append(f"job {job['id']}: {job['last_failure']}")
    return lines


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"
