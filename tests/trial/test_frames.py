"""A user's daily table in time order: dates parsed by the one format that reads them all,
ambiguous, duplicate and unreadable dates refused; any capitalisation of the usual columns."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpod.errors import HpodError
from hpod.job import DataSpec
from hpod.trial.data import load_dataset
from hpod.trial.frames import DATE_FORMATS, in_time_order

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
