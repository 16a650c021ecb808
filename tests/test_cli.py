import csv
import io
import json
import subprocess
import sys

import pytest

from hpod.cli import main

from .conftest import TINY_JOB


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
    args = ["--budget", "20K", "--horizon", "h1,h5", "--job", str(TINY_JOB), "--trials", "2", "--max-epochs", "1"]
    code, out, _ = run_cli(capsys, "run", *args, "--state-dir", str(state))
    assert code == 0
    assert "study tiny-20K-h1" in out and "study tiny-20K-h5" in out
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    lines = (state / "logs" / "tiny-20K-h5.log").read_text().splitlines()
    assert len(lines) >= 2 and all(line.startswith("Trial ") for line in lines)

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
