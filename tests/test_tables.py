"""Every table rendered at 80, 120 and 200 columns as a terminal would: the cells that matter
(numbers, states, architecture keys) appear whole, on one line per row, at every width.
The rows are generated (Hypothesis): long keys, big budgets, every state."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from hpod.display import GRID_COLUMNS, REPORT_COLUMNS, TRIAL_COLUMNS, report_table
from hpod.results.report import Cell
from hpod.status_display import STATUS_COLUMNS, status_row, status_table
from hpod.study.budget import format_budget
from hpod.tables import Column, fitted, show

WIDTHS = (80, 120, 200)
STATES = ("queued", "running", "paused", "interrupted", "done", "failed", "cancelled")
BUDGETS = (20_000, 100_000, 2_000_000, 20_000_000, 200_000_000, 2_000_000_000, 1_500_000, 500_000)

arch_keys = st.builds(
    lambda d, layers, heads, ff: f"d{d}-L{layers}-h{heads}-f{ff}",
    st.sampled_from([16, 64, 512, 1024, 4096, 8192]),
    st.integers(1, 128),
    st.sampled_from([1, 2, 4, 16, 64]),
    st.sampled_from([32, 256, 4096, 32768]),
)
losses = st.none() | st.floats(0, 99, allow_nan=False)
durations = st.none() | st.floats(0, 30 * 86400)


@st.composite
def status_jobs(draw) -> dict:
    target = draw(st.integers(1, 1000))
    best = draw(losses)
    return {
        "id": draw(st.integers(1, 99_999)),
        "study": f"{draw(st.sampled_from(['architectural_search', 'tiny', 'x' * 40]))}-2B-h1",
        "budget": draw(st.sampled_from(BUDGETS)),
        "horizon": f"h{draw(st.integers(1, 30))}",
        "state": draw(st.sampled_from(STATES)),
        "control": draw(st.sampled_from([None, None, "pause", "cancel"])),
        "trials_finished": draw(st.integers(0, target)),
        "n_trials": target,
        "best_val_loss": best,
        "skill": None if best is None else draw(st.floats(-9, 1)),
        "best_arch": None if best is None else draw(arch_keys),
        "current_trial": draw(st.none() | st.integers(0, 999)),
        "current_epoch": draw(st.none() | st.integers(0, 999)),
        "current_step": draw(st.none() | st.integers(0, 99_999)),
        "epoch_steps": draw(st.integers(1, 100_000)),
        "elapsed_s": draw(st.floats(0, 30 * 86400)),
        "eta_s": draw(durations),
        "seeds_finished": draw(st.integers(0, 5)),
        "final_seeds": draw(st.integers(0, 5)),
    }


def render(table, width: int) -> list[str]:
    console = Console(width=width, force_terminal=True, color_system=None, file=io.StringIO())
    show(console, table)
    return console.file.getvalue().splitlines()


def kept_whole_on_one_line(lines: list[str], row: list[str], columns, essential_only: bool) -> None:
    """Some line holds every essential cell of the row, each whole."""
    cells = [cell for cell, column in zip(row, columns, strict=True) if not essential_only or column.rank == 0]
    assert any(all(cell in line for cell in cells) for line in lines), (cells, lines)


@settings(max_examples=40, deadline=None)
@given(st.lists(status_jobs(), min_size=1, max_size=12))
def test_status_keeps_id_budget_horizon_state_trials_loss_arch_and_eta_whole_at_every_width(jobs):
    for width in WIDTHS:
        lines = render(status_table({"jobs": jobs}, show_all=True, width=width), width)
        for job in jobs:
            kept_whole_on_one_line(lines, status_row(job), STATUS_COLUMNS, essential_only=True)
        assert all(len(line) <= width for line in lines)
    wide = render(status_table({"jobs": jobs}, show_all=True, width=None), 400)
    for job in jobs:  # a pipe or --wide gets every column
        kept_whole_on_one_line(wide, status_row(job), STATUS_COLUMNS, essential_only=False)


def test_a_narrow_terminal_drops_whole_columns_and_says_which():
    job = {"id": 1, "study": "architectural_search-200M-h1", "budget": 200_000_000, "horizon": "h1",
           "state": "interrupted", "control": None, "trials_finished": 12, "n_trials": 50, "best_val_loss": 0.3187,
           "skill": 0.0512, "best_arch": "d1024-L128-h16-f4096", "current_trial": 13, "current_epoch": 7,
           "current_step": 40, "epoch_steps": 400,
           "elapsed_s": 36_000.0, "eta_s": 120_000.0, "seeds_finished": 0, "final_seeds": 3}  # fmt: skip
    lines = render(status_table({"jobs": [job]}, width=80), 80)
    text = "\n".join(lines)
    assert "0.3187" in text and "interrupted" in text and "d1024-L128-h16-f4096" in text and "33h20m" in text
    assert "…" not in text
    [note] = [line for line in lines if line.startswith("not shown at 80 columns: ")]
    dropped = note.removeprefix("not shown at 80 columns: ").split(" (")[0].split(", ")
    assert "study" in dropped and not {"id", "budget", "h", "state", "trials", "best val", "ETA"} & set(dropped)
    assert "architectural_search-200M-h1" not in text
    assert "architectural_search-200M-h1" in "\n".join(render(status_table({"jobs": [job]}, width=200), 200))


@st.composite
def report_cells(draw) -> Cell:
    se = draw(st.floats(0, 1))
    skill = {"loss": draw(st.floats(0, 99)), "loss_se": se, "skill_constant": draw(st.floats(-9, 1)),
             "skill_constant_se": se}  # fmt: skip
    return Cell(
        job=draw(st.sampled_from(["architectural_search", "tiny"])),
        budget=draw(st.sampled_from(BUDGETS)),
        horizon=draw(st.integers(1, 30)),
        study="s",
        target=draw(st.integers(1, 1000)),
        counts={"complete": draw(st.integers(0, 999)), "pruned": draw(st.integers(0, 999)), "failed": 3, "running": 0},
        best={"param_count": draw(st.integers(1, 9_999_999_999)), "arch": draw(arch_keys), "n_val": 12_345},
        test=None,
        baselines={"constant": {"val_loss": 0.4724}, "linear": {"val_loss": 0.4371}},
        spec=None,
        skill={"val": skill, "test": dict(skill)},
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(report_cells(), min_size=1, max_size=8))
def test_report_keeps_loss_uncertainty_params_and_arch_whole_at_every_width(cells):
    for width in WIDTHS:
        lines = render(report_table(cells, width=width), width)
        for cell in cells:
            b = cell.best
            val = cell.skill["val"]
            whole = [format_budget(cell.budget), f"h{cell.horizon}", f"{val['loss']:.4f}±{val['loss_se']:.4f}",
                     f"{b['param_count']:,}", b["arch"]]  # fmt: skip
            assert any(all(part in line for part in whole) for line in lines), (whole, lines)
        assert all(len(line) <= width for line in lines)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.lists(st.text("abc0123456789.-", min_size=1, max_size=25), min_size=6, max_size=6), max_size=10),
    st.integers(30, 200),
)
def test_fitted_tables_never_cut_a_kept_cell(rows, width):
    columns = [Column(f"c{i}", rank=i % 3) for i in range(6)]
    lines = render(fitted(columns, rows, width), width)
    for row in rows:
        kept_whole_on_one_line(lines, row, columns, essential_only=True)


def test_a_pipe_gets_every_column_unsqueezed():
    columns = [Column(f"column{i}", rank=i) for i in range(12)]
    rows = [[f"value-{i}-{'x' * 12}" for i in range(12)]]
    piped = Console(file=io.StringIO(), width=80)  # not a terminal
    show(piped, fitted(columns, rows, None))
    [line] = [line for line in piped.file.getvalue().splitlines() if "value-0" in line]
    assert all(f"value-{i}-" in line for i in range(12)) and len(line) > 80


def test_the_grid_and_trial_tables_rank_their_columns():
    assert [c.name for c in GRID_COLUMNS if c.rank == 0] == ["key", "params", "vs budget"]
    assert {"#", "state", "arch", "epochs", "val loss"} == {c.name for c in TRIAL_COLUMNS if c.rank == 0}
    assert {"budget", "h", "val mean", "test mean", "params", "arch"} == {c.name for c in REPORT_COLUMNS if c.rank == 0}


def test_a_column_with_nothing_in_it_goes_before_one_with_content_and_now_stays_while_a_trial_runs():
    running = {"id": 7, "study": "architectural_search-200M-h1", "budget": 200_000_000, "horizon": "h1",
               "state": "running", "control": None, "trials_finished": 12, "n_trials": 50, "best_val_loss": 0.3187,
               "skill": None, "best_arch": "d1024-L128-h16-f4096", "current_trial": 13, "current_epoch": 7,
               "current_step": 40, "epoch_steps": 400, "elapsed_s": 36_000.0, "eta_s": 120_000.0,
               "seeds_finished": 0, "final_seeds": 3}  # fmt: skip
    done = running | {"id": 6, "state": "done", "current_trial": None, "current_epoch": None, "current_step": None}

    def dropped(jobs: list[dict], width: int) -> list[str]:
        lines = render(status_table({"jobs": jobs}, width=width), width)
        notes = [line for line in lines if line.startswith(f"not shown at {width} columns: ")]
        return notes[0].split(": ", 1)[1].split(" (")[0].split(", ") if notes else []

    assert dropped([done], 70)[0] in ("skill", "now")  # both empty: they go first
    assert {"skill", "now"} <= set(dropped([done], 70))
    at_80 = dropped([running, done], 80)
    assert "now" not in at_80 and "skill" in at_80  # the running trial's progress is kept
    assert "t13 e7 41/400" in "\n".join(render(status_table({"jobs": [running, done]}, width=80), 80))
    seeding = running | {"trials_finished": 50, "current_trial": 1, "seeds_finished": 1}
    assert "seed 2/3 e7 41/400" in "\n".join(render(status_table({"jobs": [seeding]}, width=100), 100))
