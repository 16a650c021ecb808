import dataclasses
import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hpod.errors import HpodError
from hpod.job import MAX_INT, DataSpec, GridSpec, GuardSpec, JobSpec, SearchSpec, TrainSpec, load_job, parse_job

from .conftest import ROOT


def test_the_architectural_search_file_states_the_built_in_defaults():
    from_file = load_job(ROOT / "jobs" / "architectural_search.yaml")
    assert dataclasses.replace(from_file, text="") == JobSpec()


def test_a_job_file_overrides_only_what_it_names():
    job = parse_job("name: x\nsearch:\n  n_trials: 7\n  learning_rate: [1e-5, 1e-2]\n")
    assert job.search.n_trials == 7 and job.search.learning_rate == (1e-5, 1e-2)
    assert job.grid == JobSpec().grid and job.name == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("serch: {}", "unknown section 'serch'"),
        ("search: {n_trails: 3}", "unknown key search.n_trails"),
        ("search: {n_trials: three}", "search.n_trials must be an integer"),
        ("search: {pruner: asha}", "search.pruner must be one of"),
        ("search: {learning_rate: [1e-3, 1e-4]}", "search.learning_rate must be"),
        ("grid: {tolerance: 1.5}", "grid.tolerance must lie in"),
        ("data: {split: [0.5, 0.5, 0.5]}", "data.split must be three positive fractions"),
        ("data: {target: column}", "needs data.target_column"),
        ("train: {revin: maybe}", "train.revin must be true or false"),
        ("[1, 2", "not valid YAML"),
    ],
)
def test_a_bad_job_file_is_refused_naming_the_file_and_key(text, message):
    with pytest.raises(HpodError, match=message) as info:
        parse_job(text, source="jobs/bad.yaml")
    assert str(info.value).startswith("job file jobs/bad.yaml")


def test_a_missing_job_file_is_named(tmp_path):
    with pytest.raises(HpodError, match="job file .*nope.yaml does not exist"):
        load_job(tmp_path / "nope.yaml")


def test_command_line_overrides_apply_on_top_of_the_file(tiny_job):
    job = tiny_job.with_overrides(data="x.csv", trials=3, max_epochs=2)
    assert (job.data.path, job.search.n_trials, job.train.max_epochs) == ("x.csv", 3, 2)
    assert job.grid == tiny_job.grid


@pytest.mark.parametrize("name", ["../../../../elsewhere/x", "a/b", ".hidden", "..", 7, "", "x" * 101])
def test_a_job_name_that_could_leave_the_state_directory_is_refused(name):
    """A name of `../../../../elsewhere/x` made the daemon write logs and weights outside state/."""
    with pytest.raises(HpodError, match="job name .* must be letters, digits"):
        parse_job(yaml.safe_dump({"name": name}), source="j.yaml")


def test_safe_job_names_are_kept():
    assert parse_job("name: scaling_v2.1-h5\n").name == "scaling_v2.1-h5"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("search: {warmup_steps: [10, 50, 0]}", "search.warmup_steps must be [low, high, step]"),
        ("guard: {cpu_temp_c: .nan}", "guard.cpu_temp_c must be a finite number"),
        ("search: {learning_rate: [1.0e-4, .inf]}", "search.learning_rate must be a finite number"),
    ],
)
def test_values_no_search_can_use_are_refused_with_their_key(text, named):
    with pytest.raises(HpodError, match=re.escape(named)):
        parse_job(text, source="j.yaml")


def test_a_job_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(HpodError, match="not UTF-8 text"):
        load_job(path)


SPECS = {"data": DataSpec, "grid": GridSpec, "search": SearchSpec, "train": TrainSpec, "guard": GuardSpec}
SECTION_KEYS = {name: tuple(f.name for f in dataclasses.fields(spec)) for name, spec in SPECS.items()}  # every key
EXTREMES = (
    st.integers(-(10**20), 10**20)
    | st.sampled_from([0, -1, 2**31, 2**63, 10**9 + 1, float("inf"), float("nan"), 1e308, -0.0])
    | st.lists(st.integers(1, 4096), min_size=60, max_size=120)  # grid axes and lists past their limit
    | st.just("x" * 10_000)
    | st.just([])
)
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=6) | EXTREMES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=6,
)


@st.composite
def job_documents(draw) -> object:
    sections = {
        name: draw(st.dictionaries(st.sampled_from(keys) | st.text(max_size=4), YAML_VALUES, max_size=3))
        for name, keys in SECTION_KEYS.items()
        if draw(st.booleans())
    }
    extra = draw(st.dictionaries(st.sampled_from(["name", "nme"]) | st.text(max_size=4), YAML_VALUES, max_size=2))
    return draw(st.sampled_from([sections | extra, [sections], "text", None, 7]))


@settings(max_examples=150, deadline=None)
@given(document=job_documents())
def test_any_job_file_is_read_or_refused_in_one_line_naming_the_file(document):
    """Generated job files: a JobSpec, or one HpodError line naming the file; never a traceback."""
    text = yaml.safe_dump(document)
    try:
        job = parse_job(text, source="gen.yaml")
    except HpodError as exc:
        message = str(exc)
        assert message.startswith("job file gen.yaml: ") and "\n" not in message, message
        assert len(message) < 400, message  # a huge value is never quoted whole
        return
    assert job.text == text and job.search.n_trials >= 1
    assert all(abs(v) <= MAX_INT for v in numbers(dataclasses.asdict(job)))  # as the command line's limits


def numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def test_a_yaml_alias_bomb_is_refused_at_once_without_expanding_it():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    with pytest.raises(HpodError, match="YAML alias") as refused:
        parse_job(f"search:\n  n_trials: 3\n{bomb}", source="bomb.yaml")
    assert len(str(refused.value)) < 200
