import random

import pytest

from hpod.errors import HpodError
from hpod.job import GridSpec
from hpod.trial.grid import (
    Arch,
    GridEntry,
    build_grid,
    built_parameters,
    count_parameters,
    extremes,
    require_grid,
    verify,
)
from hpod.trial.model import DataShape

SHAPE = DataShape(n_features=11)
BUDGETS = (2_000_000, 20_000_000, 200_000_000, 2_000_000_000)


@pytest.mark.parametrize("budget", BUDGETS)
def test_default_grids_are_non_empty_and_within_tolerance(budget):
    entries = build_grid(GridSpec(), SHAPE, budget)
    assert entries
    assert all(0.75 * budget <= e.params <= 1.25 * budget for e in entries)
    assert all(e.arch.d_model % e.arch.n_heads == 0 for e in entries)
    assert all(e.arch.d_ff in (2 * e.arch.d_model, 4 * e.arch.d_model) for e in entries)


def test_every_tiny_architecture_counts_exactly(tiny_job):
    entries = [e for b in (20_000, 50_000, 100_000, 200_000) for e in build_grid(tiny_job.grid, SHAPE, b)]
    assert len(entries) > 20
    assert verify(entries, SHAPE) == []


@pytest.mark.parametrize("budget", BUDGETS)
def test_sampled_large_architectures_count_exactly(budget):
    entries = build_grid(GridSpec(), SHAPE, budget)
    sample = [entries[0], entries[-1], *random.Random(budget).sample(entries, 2)]
    for entry in sample:
        assert built_parameters(entry.arch, SHAPE) == entry.params


@pytest.mark.slow
@pytest.mark.parametrize("budget", BUDGETS)
def test_every_default_architecture_counts_exactly(budget):
    assert verify(build_grid(GridSpec(), SHAPE, budget), SHAPE) == []


def test_verify_reports_a_formula_that_disagrees_with_the_model():
    entries = build_grid(GridSpec(d_model=(32,), n_layers=(2,), n_heads=(2,), tolerance=0.9), SHAPE, 30_000)
    wrong = [type(entries[0])(entries[0].arch, entries[0].params + 1)]
    assert verify(wrong, SHAPE) == [(wrong[0], entries[0].params)]


def test_tolerance_is_a_job_option():
    narrow = build_grid(GridSpec(tolerance=0.05), SHAPE, 20_000_000)
    wide = build_grid(GridSpec(tolerance=0.5), SHAPE, 20_000_000)
    assert set(narrow) < set(wide)


def test_an_empty_grid_is_refused_with_the_budget():
    with pytest.raises(HpodError, match="budget 10"):
        require_grid(GridSpec(), SHAPE, 10)


def test_architecture_keys_are_stable_and_round_trip():
    arch = Arch(512, 8, 8, 2048)
    assert arch.key == "d512-L8-h8-f2048"
    assert Arch.from_key(arch.key) == arch
    with pytest.raises(HpodError):
        Arch.from_key("52")


def test_parameter_count_depends_on_the_data_shape():
    arch = Arch(64, 2, 4, 128)
    assert count_parameters(arch, DataShape(11)) != count_parameters(arch, DataShape(5))


def test_extremes_cover_both_ends_of_each_dimension():
    entries = build_grid(GridSpec(), SHAPE, 20_000_000)
    chosen = extremes(entries)
    assert len(chosen) == len(set(chosen)) == 6
    for dim in ("d_model", "n_layers", "n_heads"):
        values = [getattr(e.arch, dim) for e in entries]
        assert min(values) in [getattr(a, dim) for a in chosen]
        assert max(values) in [getattr(a, dim) for a in chosen]


def test_extremes_take_the_middle_of_the_other_dimensions():
    full = [GridEntry(Arch(d, n, h, 2 * d), 0) for d in (32, 64, 128) for n in (2, 4, 8) for h in (2, 4, 8)]
    assert extremes(full) == [
        Arch(32, 4, 4, 64), Arch(128, 4, 4, 256), Arch(64, 2, 4, 128),
        Arch(64, 8, 4, 128), Arch(64, 4, 2, 128), Arch(64, 4, 8, 128),
    ]  # fmt: skip
