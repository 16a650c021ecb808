"""A user's daily table in time order: dates parsed by the one format that reads them all,
ambiguous, duplicate and unreadable dates refused; any capitalisation of the usual columns."""

from __future__ import annotations

import datetime as dt
import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpod.errors import HpodError
from hpod.job import DataSpec
from hpod.trial.data import load_dataset
from hpod.trial.frames import DATE_FORMATS, in_time_order, read_table

SOURCE = "data file x.csv"


def prices(days: list[dt.date], date_format: str) -> pd.DataFrame:
    """An exported daily table, newest first, with its dates as text."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
    frame = pd.DataFrame({
        "Date": [d.strftime(date_format) for d in days],
        "Open": close * 0.999, "High": close * 1.01, "Low": close * 0.99, "Close": close,
        "Adj Close": close, "Volume": rng.integers(1_000_000, 2_000_000, len(days)),
    })  # fmt: skip
    return frame.iloc[::-1].reset_index(drop=True)


def business_days(start: str, count: int) -> list[dt.date]:
    return [d.date() for d in pd.bdate_range(start, periods=count)]


def test_us_dates_are_put_in_time_order_and_not_sorted_as_text(tmp_path):
    """Sorted as text, 1/4/1999 comes after 1/31/2000 and the splits leak the future."""
    days = business_days("1999-01-04", 3000)
    path = tmp_path / "index.csv"
    prices(days, "%m/%d/%Y").to_csv(path, index=False)
    data = load_dataset(DataSpec(path=str(path), min_val_samples=100), 1)
    frame = in_time_order(pd.read_csv(path).rename(columns=str.lower), "date", None, SOURCE)
    assert frame["date"].is_monotonic_increasing and frame["date"].iloc[0] == pd.Timestamp("1999-01-04")
    assert data.features.shape[0] == len(days) - 50  # OHLCV found under any capitalisation


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        (["01/02/2000", "01/03/2000", "02/01/2000"], "read as %m/%d/%Y or %d/%m/%Y; set data.date_format"),
        (["2000-01-03", "2000-01-04", "2000-01-03"], "repeats the date 2000-01-03 \\(row 2\\)"),
        (["2000-01-03", "not-a-date", "2000-01-05"], "'not-a-date' \\(row 1\\) is not a date"),
    ],
)
def test_ambiguous_duplicate_and_unreadable_dates_are_refused_with_the_row(dates, message):
    with pytest.raises(HpodError, match=message):
        in_time_order(pd.DataFrame({"date": dates, "close": [1.0, 2.0, 3.0]}), "date", None, SOURCE)


def test_a_date_format_settles_day_and_month(tmp_path):
    frame = pd.DataFrame({"date": ["01/02/2000", "02/01/2000", "03/01/2000"], "close": [1.0, 2.0, 3.0]})
    ordered = in_time_order(frame, "date", "%d/%m/%Y", SOURCE)
    assert list(ordered["date"].dt.strftime("%m-%d")) == ["01-02", "01-03", "02-01"]
    with pytest.raises(HpodError, match="does not match data.date_format"):
        in_time_order(frame, "date", "%Y-%m-%d", SOURCE)


def test_a_header_only_file_is_one_line(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("date,open,high,low,close,volume\n")
    with pytest.raises(HpodError, match="has no rows"):
        load_dataset(DataSpec(path=str(path)), 1)


@settings(max_examples=60, deadline=None)
@given(
    first=st.dates(min_value=dt.date(1950, 1, 1), max_value=dt.date(2030, 1, 1)),
    gaps=st.lists(st.integers(min_value=1, max_value=40), min_size=2, max_size=40),
    date_format=st.sampled_from(DATE_FORMATS),
    order=st.randoms(use_true_random=False),
)
def test_any_common_date_layout_is_either_put_in_true_time_order_or_refused(first, gaps, date_format, order):
    """Never a wrong order: whatever the format and the file's row order."""
    days = [first]
    for gap in gaps:
        days.append(days[-1] + dt.timedelta(days=gap))
    if "%y" in date_format and not all(1969 <= d.year <= 2068 for d in days):
        return  # two-digit years name a century window of their own
    shuffled = list(range(len(days)))
    order.shuffle(shuffled)
    frame = pd.DataFrame({"date": [days[i].strftime(date_format) for i in shuffled], "close": shuffled})
    try:
        ordered = in_time_order(frame, "date", None, SOURCE)
    except HpodError as exc:
        assert "data.date_format" in str(exc) and "\n" not in str(exc)
        return
    assert list(ordered["close"]) == sorted(shuffled)


def unbounded_inputs(folder: Path) -> dict[str, Path]:
    """Data files that would grow or block a reader without end, each made for real (and small on disk)."""
    sparse = folder / "sparse.csv"
    with sparse.open("wb") as f:
        f.truncate(600 * 2**20)  # 600 MiB of holes: over the default 512
    bomb = folder / "bomb.csv.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(b"date,open\n" + b"0" * (3 * 2**20))  # a few KiB that expand to 3 MiB, over max_mb 2
    wide = folder / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(5000)) + "\n" + ",".join(["1"] * 5000) + "\n")
    fifo = folder / "fifo.csv"
    os.mkfifo(fifo)
    return {"sparse": sparse, "bomb": bomb, "wide": wide, "fifo": fifo}


def test_data_files_without_bounds_are_refused_in_one_line_before_they_are_parsed(tmp_path):
    inputs = unbounded_inputs(tmp_path)
    expected = {"sparse": "over the limit of 512 MiB", "bomb": "expands past 2 MiB", "wide": "5,000 columns",
                "fifo": "not a regular file"}  # fmt: skip
    for name, path in inputs.items():  # a fifo opened for reading would block: the refusal comes first
        with pytest.raises(HpodError) as refused:
            read_table(path, max_mb=2 if name == "bomb" else 512)
        assert expected[name] in str(refused.value) and "\n" not in str(refused.value), str(refused.value)
    with pytest.raises(HpodError, match="raise data.max_mb"):
        read_table(inputs["sparse"], max_mb=512)


def test_a_file_that_is_no_table_never_has_its_lines_quoted(tmp_path):
    shadow = tmp_path / "shadow.csv"
    shadow.write_text("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    with pytest.raises(HpodError) as refused:
        load_dataset(DataSpec(path=str(shadow)), 1)
    assert "root:" not in str(refused.value) and "column 'open' is missing" in str(refused.value)
