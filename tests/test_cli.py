import csv
import gc
import io
import json
import os
import re
import subprocess
import sys

import pytest
from optuna.trial import TrialState

from hpod.cli import main

from .conftest import TINY_JOB
from .helpers import log_lines, study

MEASURED = re.compile(r"predicted (\d+\.\d+) GiB, measured (\d+\.\d+) GiB")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["run", "--budget", "2X", "--horizon", "h1"], "budget '2X'"),
        (["run", "--budget", "2M", "--horizon", "5"], "horizon '5'"),
        (["run", "--budget", "2M", "--horizon", "h1", "--job", "nope.yaml"], "nope.yaml"),
        (["run", "--budget", "10", "--horizon", "h1"], "budget 10"),
        (["run", "--budget", "20K", "--horizon", "h1", "--job", str(TINY_JOB), "--data", "nope.csv"], "nope.csv"),
        (["run", "--budget", "20K", "--horizon", "h1", "--trials", "0"], "--trials"),
        (["grid", "--budget", "2M", "--horizon", "h0"], "horizon 'h0'"),
        (["export", "nope"], "no studies yet"),
        (["grid", "--budget", "9" * 400], "more than 1e+13 parameters"),
        (["run", "--budget", "20K", "--horizon", "h" + "9" * 23], "more than h10000"),
        (["enqueue", "--budget", "20K", "--horizon", "h1", "--trials", "9" * 20], "--trials"),
        (["enqueue", "--budget", "20K", "--horizon", "h1", "--priority", "9" * 20], "--priority"),
        (["enqueue", "--budget", "20K", "--horizon", "h1", "--timeout", "nan"], "not a finite number"),
        (["enqueue", "--budget", "20K", "--horizon", "h1", "--timeout", "inf"], "--timeout"),
        (
            ["enqueue", "--budget", "20K", "--horizon", "h1", "--job", str(TINY_JOB), "--storage", "notaurl"],
            "storage 'notaurl' cannot be opened",
        ),
        (["daemon", "--window", "22:00Z-07:00"], "without a time zone"),
        (["daemon", "--guard", "cpu_temp_c=[1"], "is not a value"),
        (["daemon", "--guard", "cpu_temp_c=.nan"], "must be a finite number"),
        (["report", "--storage", "notaurl"], "storage 'notaurl' cannot be opened"),
        (["show", "9" * 30], "nothing was enqueued there"),
        (["log", "9" * 30], "nothing was enqueued there"),
        (["plan", "--hours", "0"], "--hours"),
        (["enqueue", "--budget", "20K", "--horizon", "h1", "--memory-limit", "9" * 400 + "G"], "more than 1 PiB"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(capsys, tmp_path, args, named):
    state = tmp_path / "state"
    code, _, err = run_cli(capsys, *args, *(["--state-dir", str(state)] if args[0] != "grid" else []))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("Error: ") and named in err
    assert not state.exists()


def test_run_completes_studies_logs_each_trial_and_exports_them(capsys, tmp_path):
    state = tmp_path / "state"
    args = ["--budget", "20K", "--horizon", "h5", "--job", str(TINY_JOB), "--trials", "2", "--max-epochs", "1"]
    code, out, _ = run_cli(capsys, "run", *args, "--state-dir", str(state))
    assert code == 0  # two studies in one run: test_report.py's real tiny studies
    assert "study tiny-20K-h5" in out and "best trial" in out
    assert "(baselines: constant 0." in out and "trailing 0." in out
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    lines = log_lines(state / "logs" / "tiny-20K-h5.log")
    assert len(lines) >= 2 and all(line.startswith("Trial ") for line in lines)
    assert not list(state.glob("run-*.db*")) and not (state / "queue.db").exists()  # its queue was private
    complete = study(state, "tiny-20K-h5").get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2
    for trial in complete:  # each in its own worker: in one process the
        predicted, measured = map(float, MEASURED.search(trial.user_attrs["micro_batch_choice"]).groups())
        assert 0.5 * predicted < measured < 2 * predicted, trial.user_attrs  # high-water mark said -0.00 GiB

    code, out, _ = run_cli(capsys, "export", "tiny-20K-h5", "--format", "csv", "--state-dir", str(state))
    rows = list(csv.DictReader(io.StringIO(out)))
    finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    assert code == 0 and len(finished) == 2
    assert all(r["d_model"] and r["n_heads"] and r["param_count"] and r["val_loss"] for r in finished)

    target = tmp_path / "trials.json"
    code, _, _ = run_cli(
        capsys, "export", "tiny-20K-h5", "--format", "json", "-o", str(target), "--state-dir", str(state)
    )
    assert code == 0 and [r["number"] for r in json.loads(target.read_text())] == [int(r["number"]) for r in rows]


def test_grid_prints_json_and_verifies_counts(capsys):
    code, out, err = run_cli(capsys, "grid", "--budget", "50K", "--job", str(TINY_JOB), "--json", "--verify")
    assert code == 0
    rows = json.loads(out)
    assert rows and all(37_500 <= r["params"] <= 62_500 for r in rows)
    assert f"verified: {len(rows)} architectures" in err


def test_the_module_runs_as_a_command():
    result = subprocess.run([sys.executable, "-m", "hpod", "grid", "--budget", "2Q"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("Error: budget '2Q'")


def write_string_column_job(tmp_path) -> str:
    """A job on a user CSV whose feature column 'regime' holds low/normal/high."""
    rows = ["x1,regime,y"] + [f"{i},{['low', 'normal', 'high'][i % 3]},{i % 2}" for i in range(3000)]
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    job = tmp_path / "user.yaml"
    job.write_text(
        f"data: {{path: {tmp_path / 'bad.csv'}, features: [x1, regime], target: column, target_column: y,"
        " min_val_samples: 100}\ngrid: {d_model: [16, 32], n_layers: [1, 2], n_heads: [2]}\n"
    )
    return str(job)


def test_every_invalid_input_leaves_the_queue_byte_for_byte_unchanged(capsys, tmp_path):
    state = tmp_path / "state"
    common = ["--job", str(TINY_JOB), "--state-dir", str(state)]
    assert run_cli(capsys, "enqueue", "--budget", "20K", "--horizon", "h1", *common)[0] == 0
    gc.collect()  # close the enqueue's connection so the WAL is folded into queue.db
    before = (state / "queue.db").read_bytes()
    bad_job = write_string_column_job(tmp_path)
    invalid = [
        ["enqueue", "--budget", "20K,2X", "--horizon", "h1", *common],
        ["enqueue", "--budget", "20K", "--horizon", "h1,h0", *common],
        ["enqueue", "--budget", "20K", "--horizon", "h1", *common],  # a duplicate
        ["enqueue", "--budget", "30K", "--horizon", "h1", "--job", bad_job, "--state-dir", str(state)],
        ["enqueue", "--budget", "30K", "--horizon", "h1", *common, "--data", str(tmp_path / "none.csv")],
        ["enqueue", "--budget", "30K", "--horizon", "h1", *common, "--priority", "high"],
        ["enqueue", "--budget", "30K", "--horizon", "h1", *common, "--timeout", "-1"],
        ["enqueue", "--budget", "10", "--horizon", "h1", *common],
        ["pause", "99", "--state-dir", str(state)],
        ["resume", "1", "--state-dir", str(state)],
        ["cancel", "x", "--state-dir", str(state)],
        ["show", "99", "--state-dir", str(state)],
        ["export", "99", "--state-dir", str(state)],
        ["daemon", "--window", "22-7", "--state-dir", str(state)],
    ]
    for args in invalid:
        code, _, err = run_cli(capsys, *args)
        assert code == 2, args
        assert err.count("\n") == 1 and err.startswith("Error: "), (args, err)
        gc.collect()
        assert (state / "queue.db").read_bytes() == before, args
    assert "column 'regime' is not numeric" in run_cli(capsys, *invalid[3])[2]


def test_status_and_show_report_queued_jobs(capsys, tmp_path):
    state = tmp_path / "state"
    args = ["--budget", "20K,30K", "--horizon", "h1", "--job", str(TINY_JOB), "--state-dir", str(state)]
    code, out, _ = run_cli(capsys, "enqueue", *args, "--trials", "3", "--priority", "2")
    assert code == 0 and [line.split("\t")[:2] for line in out.splitlines()] == [
        ["1", "tiny-20K-h1"],
        ["2", "tiny-30K-h1"],
    ]
    assert all(line.split("\t")[2].startswith("on cpu: epoch ") for line in out.splitlines())
    code, out, _ = run_cli(capsys, "status", "--json", "--state-dir", str(state))
    data = json.loads(out)
    assert [(j["study"], j["state"], j["n_trials"], j["priority"]) for j in data["jobs"]] == [
        ("tiny-20K-h1", "queued", 3, 2),
        ("tiny-30K-h1", "queued", 3, 2),
    ]
    assert data["daemon_alive"] is False and data["machine"]["ram_available"] > 0
    code, out, _ = run_cli(capsys, "status", "--state-dir", str(state))
    assert code == 0 and "tiny-30K-h1" in out and "daemon not running" in out and "CPU temperature n/a" in out
    assert run_cli(capsys, "pause", "2", "--state-dir", str(state))[1] == "job 2: paused\n"
    assert run_cli(capsys, "cancel", "1", "--state-dir", str(state))[1] == "job 1: cancelled\n"


def test_status_shows_active_jobs_and_the_next_and_last_twenty_and_says_what_it_left_out():
    from hpod.status_display import shown_jobs

    states = ["done"] * 30 + ["running", "interrupted"] + ["queued"] * 25
    jobs = [{"id": i, "state": state} for i, state in enumerate(states)]
    shown, hidden = shown_jobs(jobs, show_all=False)
    assert [j["id"] for j in shown] == list(range(10, 52))  # done 10-29, running 30, interrupted 31, queued 32-51
    assert hidden == "5 more queued and 10 older finished jobs: hpod status --all"
    assert shown_jobs(jobs, show_all=True) == (jobs, None)


def test_shell_completion_offers_the_queues_job_ids_and_study_names(tmp_path):
    state = tmp_path / "state"
    assert main(["enqueue", "--budget", "20K", "--horizon", "h1,h5", "--job", str(TINY_JOB), "--no-estimate",
                 "--state-dir", str(state)]) == 0  # fmt: skip

    def complete(*words: str) -> list[str]:
        line = ["hpod", *words]
        env = {"_HPOD_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(line), "COMP_CWORD": str(len(line) - 1)}
        result = subprocess.run(
            [sys.executable, "-m", "hpod"], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]

    assert complete("retry", "--state-dir", str(state), "") == ["1", "2", "tiny-20K-h1", "tiny-20K-h5"]
    assert complete("show", "--state-dir", str(state), "tiny-20K-h5") == ["tiny-20K-h5"]
    assert complete("pause", "--state-dir", str(tmp_path / "none"), "") == []  # no queue: nothing, no traceback
