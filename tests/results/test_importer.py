import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from hpod.cli import main
from hpod.records import TrialLog, export_text
from hpod.state import StateDir
from hpod.storage import open_storage
from hpod.study.objective import Objective
from hpod.study.plan import finished_count, open_study
from hpod.supervisor.queue import Queue
from hpod.supervisor.trials import run_study
from hpod.trial.grid import Arch
from tests.conftest import TINY_JOB

IN_GRID = Arch(32, 2, 2, 64)  # 21,409 parameters: inside the tiny grid of 20K
NOT_IN_GRID = Arch(256, 192, 8, 1024)


def legacy(number: int, arch: Arch, *, nested: bool = False, **params) -> dict:
    """A trial file of the replaced system (trials/trial_0007.json)."""
    architecture = {"d_model": arch.d_model, "n_layers": arch.n_layers, "n_heads": arch.n_heads,
                    "d_ff": arch.d_ff, "param_count": 151706881}  # fmt: skip
    record = {
        "trial_number": number, "value": 0.3756 + number / 1000, "state": "COMPLETE",
        "params": {"learning_rate": 0.000158, "epochs": 6, "batch_size": 64, "weight_decay": 5.23e-04,
                   "warmup_steps": 30} | params,
        "datetime_start": "2025-01-01T00:00:00", "datetime_complete": "2025-01-01T00:13:32",
        "duration_seconds": 812.4,
        "user_attrs": {"arch_idx": 32, "learning_curve": [{"epoch": 0, "train_loss": 0.61, "val_loss": 0.58}],
                       "split_stats": {"n_train": 4075, "n_val": 19, "n_test": 19}},
    }  # fmt: skip
    if nested:
        record["user_attrs"]["architecture"] = architecture
    else:
        record["architecture"] = architecture
    return record


def write(tmp_path, name: str, record) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(record))
    return str(path)


@pytest.fixture
def job(tmp_path, capsys):
    """A queued 20K tiny job and a way to run hpod commands against its state directory."""
    state = tmp_path / "state"

    def hpod(*args) -> tuple[int, str, str]:
        code = main([*args, "--state-dir", str(state)])
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = hpod("enqueue", "--budget", "20K", "--horizon", "h1", "--job", str(TINY_JOB), "--trials", "3")
    assert code == 0, err
    hpod.state = state
    return hpod


def study_of(hpod):
    state = StateDir(hpod.state)
    row = Queue(state.queue_db).job(1)
    return open_study(row.plan, open_storage(state.storage_url()))


def test_replaced_system_files_import_with_their_architecture_and_extra_attrs(job, tmp_path):
    files = [write(tmp_path, "trial_0000.json", legacy(0, IN_GRID)),
             write(tmp_path, "trial_0001.json", legacy(1, IN_GRID, nested=True, learning_rate=2e-4))]  # fmt: skip
    code, out, _ = job("import", "1", *files)
    assert code == 0 and out.splitlines()[0] == "imported 2 trials (2 complete)"
    trials = [t for t in study_of(job).trials if t.state == TrialState.COMPLETE]
    assert [t.params["arch"] for t in trials] == [IN_GRID.key] * 2
    first = trials[0]
    assert first.value == pytest.approx(0.3756) and first.params["warmup_steps"] == 30
    assert first.user_attrs["batch_size"] == 64 and first.user_attrs["arch_idx"] == 32  # kept, never mapped
    assert first.user_attrs["n_heads"] == 2 and first.user_attrs["param_count"] == 21_409
    assert first.user_attrs["imported_param_count"] == 151_706_881
    assert first.intermediate_values == {0: 0.58}


def test_values_outside_the_jobs_ranges_widen_them_and_say_so(job, tmp_path):
    file = write(tmp_path, "t.json", legacy(0, IN_GRID, warmup_steps=75, learning_rate=2e-3))
    code, out, _ = job("import", "1", file)
    assert code == 0
    assert "widened warmup_steps to [10, 75] step 5 to cover imported values" in out
    assert "widened learning_rate to [0.0001, 0.002]" in out
    study = study_of(job)
    assert study.user_attrs["widened"]["warmup_steps"] == {"log": False, "step": 5, "low": 10, "high": 75}
    trial = study.ask()  # the objective samples from the widened range
    objective_space = __import__("hpod.study.plan", fromlist=["distributions"]).distributions
    plan = Queue(StateDir(job.state).queue_db).job(1).plan
    space = objective_space(plan.job.search, [e.arch.key for e in plan.grid], study.user_attrs["widened"])
    assert space["learning_rate"].high == 2e-3
    assert trial.suggest_float("learning_rate", 1e-4, 2e-3, log=True) <= 2e-3


def test_excluded_and_unknown_architectures_are_skipped_with_counts(job, tmp_path):
    files = [write(tmp_path, "a.json", legacy(0, IN_GRID)), write(tmp_path, "b.json", legacy(1, NOT_IN_GRID)),
             write(tmp_path, "c.json", legacy(2, Arch(16, 4, 2, 64)))]  # fmt: skip
    code, out, _ = job("import", "1", *files, "--exclude-arch", "d16-L4-h2-f64")
    assert code == 0
    assert out.splitlines() == [
        "imported 1 trials (1 complete)",
        "skipped 1: architecture d16-L4-h2-f64 is excluded",
        f"skipped 1: architecture {NOT_IN_GRID.key} is not in the job's grid",
    ]


def test_importing_the_same_file_twice_adds_nothing(job, tmp_path):
    file = write(tmp_path, "a.json", [legacy(0, IN_GRID), legacy(1, IN_GRID)])
    assert job("import", "1", file)[1].startswith("imported 2 trials")
    code, out, _ = job("import", "1", file)
    assert code == 0 and out.splitlines() == ["imported 0 trials (none)", "skipped 2: already imported"]
    assert finished_count(study_of(job)) == 2


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (legacy(5, IN_GRID, momentum=0.9), "unknown parameter 'momentum'"),
        (legacy(5, IN_GRID) | {"value": float("nan")}, "needs a finite value"),
        (legacy(5, IN_GRID, learning_rate=float("inf")), "parameter learning_rate is inf"),
        (legacy(5, IN_GRID) | {"state": "WEIRD"}, "state 'WEIRD'"),
        (legacy(5, IN_GRID, dropout=1.5), "parameter dropout is 1.5; it must be a probability in [0, 1)"),
        (legacy(5, IN_GRID, warmup_steps=-100), "parameter warmup_steps is -100; it must be a whole number"),
        (legacy(5, IN_GRID, warmup_steps=15.5), "parameter warmup_steps is 15.5; it must be a whole number"),
        (legacy(5, IN_GRID, learning_rate=-1e-3), "parameter learning_rate is -0.001; it must be a positive"),
    ],
)
def test_one_bad_trial_refuses_the_whole_import_naming_it(job, tmp_path, record, message):
    good = write(tmp_path, "good.json", legacy(0, IN_GRID))
    bad = write(tmp_path, "bad.json", record)
    before = len(study_of(job).trials)
    code, _, err = job("import", "1", good, bad)
    assert code == 2 and message in err and "bad.json" in err
    assert len(study_of(job).trials) == before


def test_log_lines_and_the_json_export_round_trip_into_a_fresh_study(job, tmp_path, dataset_h5):
    state = StateDir(job.state)
    plan = Queue(state.queue_db).job(1).plan
    source = open_study(plan, f"sqlite:///{tmp_path / 'source.db'}")
    log_file = tmp_path / "source.log"
    fast = plan.job.with_overrides(max_epochs=1)
    objective = Objective(type(plan)(fast, plan.budget, 1, plan.grid), dataset_h5, source.sampler)
    run_study(source, objective, target=3, callbacks=[TrialLog(log_file)])
    exported = tmp_path / "trials.json"
    exported.write_text(export_text(source.trials, "json"))

    assert job("import", "1", str(exported))[0] == 0
    imported = {t.user_attrs["original_number"]: t for t in study_of(job).trials if "import_key" in t.user_attrs}
    for trial in source.trials:
        if trial.state == TrialState.WAITING:
            continue
        copy = imported[trial.number]
        assert (copy.state, copy.params) == (trial.state, trial.params)
        assert copy.user_attrs["best_val_loss"] == trial.user_attrs["best_val_loss"]
        assert copy.user_attrs["micro_batch"] == trial.user_attrs["micro_batch"]
        if trial.state == TrialState.COMPLETE:
            assert copy.value == trial.value

    code, out, _ = job("import", "1", str(log_file))  # the same trials at log precision: already there
    assert code == 0 and "already in the study" in out, out
    assert not [t for t in study_of(job).trials if str(log_file) in t.user_attrs.get("imported_from", "")]
    code, out, err = job("show", "1")  # the export's pause count did not come back as a list of pauses
    assert code == 0, err
    code, _, err = job("export", "1", "--format", "json")
    assert code == 0, err


def test_a_study_importing_its_own_export_adds_nothing(job, tmp_path, dataset_h5):
    """It doubled the study's trials (status 4/2)."""
    state = StateDir(job.state)
    plan = Queue(state.queue_db).job(1).plan
    study = study_of(job)
    objective = Objective(type(plan)(plan.job.with_overrides(max_epochs=1), plan.budget, 1, plan.grid), dataset_h5,
                          study.sampler)  # fmt: skip
    run_study(study, objective, target=2)
    exported = tmp_path / "own.json"
    exported.write_text(export_text(study.trials, "json"))
    before = len(study_of(job).trials)
    code, out, err = job("import", "1", str(exported))
    assert code == 0 and "already in the study" in out, (out, err)
    assert len(study_of(job).trials) == before


def test_an_unknown_field_in_an_export_record_is_refused_and_a_refused_import_writes_no_study(job, tmp_path):
    record = {"number": 0, "state": "COMPLETE", "arch": IN_GRID.key, "val_loss": 0.5, "momentum": 0.9}
    code, _, err = job("import", "1", write(tmp_path, "x.json", [record]))
    assert code == 2 and "unknown field 'momentum'" in err
    assert not (job.state / "optuna.db").exists()  # the job never ran: nothing opened, nothing written


def test_imported_finished_trials_count_toward_the_jobs_target(job, tmp_path):
    files = [write(tmp_path, f"t{i}.json", legacy(i, IN_GRID, learning_rate=1e-4 * (i + 1))) for i in range(3)]
    assert job("import", "1", *files)[0] == 0
    code, out, _ = job("status", "--json")
    assert json.loads(out)["jobs"][0]["trials_finished"] == 3
    code, out, _ = job("daemon", "--until-idle")
    assert code == 0
    assert json.loads(job("status", "--json")[1])["jobs"][0]["state"] == "done"
    assert len([t for t in study_of(job).trials if t.state != TrialState.WAITING]) == 3  # nothing new ran


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["learning_rate", "weight_decay", "warmup_steps", "epochs", "dropout"]),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**6), 10**6), st.integers(10**9 - 10, 10**18)
    ),
)
def test_a_parameter_value_is_imported_only_inside_its_domain_and_otherwise_nothing_is_added(
    job, tmp_path, name, value
):
    """Generated values: a finite value inside the parameter's domain is imported (widening the
    job's range if need be); anything else is one line, exit 2, and no trial added."""
    path = write(tmp_path, "t.json", legacy(7, IN_GRID, **{name: value}))
    before = len(study_of(job).trials)
    code, _, err = job("import", "1", path)
    valid = {
        "learning_rate": lambda v: v > 0,
        "weight_decay": lambda v: v > 0,
        "warmup_steps": lambda v: float(v).is_integer() and 0 <= v <= 10**9,
        "epochs": lambda v: v in (4, 6, 8),  # tiny.yaml's categorical; others are skipped, not refused
        "dropout": lambda v: 0 <= v < 1,
    }[name]
    finite = not isinstance(value, float) or math.isfinite(value)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("Error: ") and f"parameter {name}" in err
        assert not (finite and valid(value)) and len(study_of(job).trials) == before
    else:
        assert code == 0 and finite and (valid(value) or name == "epochs"), err


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
EXPORT_KEYS = ("number", "state", "arch", "val_loss", "learning_rate", "dropout", "epochs", "d_model", "pauses")
LEGACY_KEYS = ("trial_number", "value", "state", "params", "architecture", "user_attrs")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.dictionaries(st.sampled_from(EXPORT_KEYS + LEGACY_KEYS) | st.text(max_size=5), JSON_VALUES, max_size=6),
        min_size=1,
        max_size=3,
    )
    | JSON_VALUES
)
def test_any_json_file_is_imported_or_refused_in_one_line_and_a_refusal_adds_nothing(job, tmp_path, records):
    path = write(tmp_path, "generated.json", records)
    before = len(study_of(job).trials)
    code, _, err = job("import", "1", path)
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("Error: ") and err.count("\n") == 1, err
        assert len(study_of(job).trials) == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.from_regex(r"Trial [0-9]{1,3}: [a-z_=, 0-9.x/-]{0,60}", fullmatch=True), min_size=1, max_size=3)
)
def test_any_log_file_is_imported_or_refused_in_one_line(job, tmp_path, lines):
    path = tmp_path / "generated.log"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = job("import", "1", str(path))
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("Error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([{"number": 0, "state": "COMPLETE", "arch": [1, 2], "val_loss": 0.5}], "arch is [1, 2], not an architecture"),
        ([{"number": 0, "state": "COMPLETE", "arch": IN_GRID.key, "val_loss": "0.5"}], "the value '0.5' is not"),
        ([{"number": 0, "state": "PRUNED", "val_loss": 0.5}], "arch is None"),
        (legacy(1, IN_GRID) | {"user_attrs": {"learning_curve": [{"epoch": "x", "val_loss": 0.5}]}}, "learning_curve"),
        (legacy(1, IN_GRID) | {"value": "abc"}, "the value 'abc' is not a number"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ("Trial 5: garbage\n", "not a trial log line"),
    ],
)
def test_records_that_ended_in_a_traceback_are_refused_in_one_line(job, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    code, _, err = job("import", "1", str(path))
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_optunas_own_trial_records_import(job, tmp_path):
    """`number`, `state`, `value`, `params` got a misleading "needs a finite value, not None"."""
    record = {"number": 3, "state": "COMPLETE", "value": 0.41, "params": {"arch": IN_GRID.key, "learning_rate": 2e-4}}
    code, out, err = job("import", "1", write(tmp_path, "optuna.json", [record]))
    assert code == 0 and out.startswith("imported 1 trials"), err
    [trial] = [t for t in study_of(job).trials if "import_key" in t.user_attrs]
    assert trial.value == 0.41 and trial.params["learning_rate"] == 2e-4 and trial.user_attrs["original_number"] == 3


def test_a_timestamped_line_of_a_trial_that_failed_before_its_micro_batch_imports_without_the_path(tmp_path):
    from hpod.results.importer import read_candidates

    line = (
        "2026-12-01T21:33:01+0000 Trial 0: d_model=32, n_layers=2, n_heads=2, d_ff=64, params=21,409, batch=?, "
        "learning_rate=1.8e-04, weight_decay=4.7e-03, warmup_steps=10, dropout=0.26, epochs=0/1, state=FAIL, "
        "val_loss=nan, reason=RuntimeError: no mps here (traceback: /srv/hpod/logs/tracebacks/x.trial-0.txt)"
    )
    log = tmp_path / "x.log"
    log.write_text(line + "\n")
    [candidate] = read_candidates(log)
    assert candidate.state == TrialState.FAIL and candidate.params["arch"] == IN_GRID.key
    assert candidate.user_attrs["fail_reason"] == "RuntimeError: no mps here"
    assert "micro_batch" not in candidate.user_attrs and candidate.source == f"{log}:Trial 0"
