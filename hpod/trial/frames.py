"""Reading a user's table of daily rows and putting it in time order.

Exported daily prices come as `Date, Open, High, Low, Close, Adj Close, Volume` with any
capitalisation, and with dates written Y-m-d, m/d/Y or d/m/Y. Sorting such dates as strings
scrambles the series and makes "chronological" splits leak the future, so the date column is
parsed by a format that reads every row, an ambiguous day/month order is refused unless the
job names the format, and duplicate or unreadable dates are refused with the row.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pandas as pd

from hpod.errors import HpodError
from hpod.state import regular_file

# Tried in this order; a format counts when it reads every row of the column.
MAX_COLUMNS = 1000  # a data file's columns (features are a handful; 10^6 would exhaust memory)
MAX_HEADER = 1 << 20  # bytes of a CSV's first line
DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y%m%d",
    "%Y-%m-%d %H:%M:%S",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%m-%d-%Y",
    "%d-%m-%Y",
    "%d.%m.%Y",
    "%m/%d/%y",
    "%d/%m/%y",
)


def column_key(name: object) -> str:
    """How a column is matched: `Adj Close`, `adj_close` and `ADJ_CLOSE` are one column."""
    return str(name).strip().lower().replace(" ", "_")


def read_table(path: Path, max_mb: int) -> pd.DataFrame:
    """A CSV, gzipped CSV or Parquet file as read, with matching-ready column names; its size,
    expanded size and columns bounded before it is parsed (`data.max_mb` raises the limit)."""
    max_bytes, raise_it = max_mb * 2**20, "; raise data.max_mb in the job file to read it"
    if regular_file(path, "data file", max_bytes, raise_it) == 0:
        raise HpodError(f"data file {path} is empty (0 bytes)")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            check_columns(path, len(pq.read_schema(path).names))
            frame = pd.read_parquet(path)
        elif path.suffix == ".csv" or path.suffixes[-2:] == [".csv", ".gz"]:
            frame = read_csv(path, max_bytes, raise_it)
        else:
            raise HpodError(f"data file {path}: expected .csv, .csv.gz or .parquet")
    except (ValueError, OSError, ImportError, UnicodeDecodeError, EOFError, pd.errors.ParserError) as exc:
        raise HpodError(f"data file {path}: cannot be read ({type(exc).__name__})") from None
    if frame.empty:
        raise HpodError(f"data file {path}: has no rows")
    return normalise_columns(frame, f"data file {path}")


def read_csv(path: Path, max_bytes: int, raise_it: str) -> pd.DataFrame:
    """A CSV, gunzipped into memory no larger than the limit (a gzip bomb stops there)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HpodError(f"data file {path} expands past {max_bytes / 2**20:,.0f} MiB{raise_it}")
        source = io.BytesIO(data)
    else:
        source = path.open("rb")
    with source:
        header = source.readline(MAX_HEADER + 1)
        if len(header) > MAX_HEADER:
            raise HpodError(f"data file {path}: its first line is over {MAX_HEADER:,} bytes; is it a CSV?")
        check_columns(path, len(header.split(b",")))
        source.seek(0)
        return pd.read_csv(source)


def check_columns(path: Path, columns: int) -> None:
    if columns > MAX_COLUMNS:
        raise HpodError(f"data file {path} has {columns:,} columns; at most {MAX_COLUMNS:,}")


def normalise_columns(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    keys = [column_key(c) for c in frame.columns]
    seen: dict[str, object] = {}
    for original, key in zip(frame.columns, keys, strict=True):
        if key in seen:
            raise HpodError(f"{source}: columns {seen[key]!r} and {original!r} are the same name")
        seen[key] = original
    return frame.set_axis(keys, axis=1)


def in_time_order(frame: pd.DataFrame, date_column: str | None, date_format: str | None, source: str) -> pd.DataFrame:
    """The rows oldest first by the date column; the file's order when it has none."""
    key = None if date_column is None else column_key(date_column)
    if key is None or key not in frame.columns:
        if date_format is not None:
            raise HpodError(f"{source}: data.date_format is set but there is no date column {date_column!r}")
        return frame.reset_index(drop=True)
    dates = parse_dates(frame[key], date_format, f"{source}: column {date_column!r}")
    duplicated = dates.duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().argmax())
        raise HpodError(f"{source}: column {date_column!r} repeats the date {dates.iloc[row].date()} (row {row})")
    return frame.assign(**{key: dates}).sort_values(key, kind="stable").reset_index(drop=True)


def parse_dates(values: pd.Series, date_format: str | None, where: str) -> pd.Series:
    """Dates by the given format, else by the one format in DATE_FORMATS that reads every row."""
    if pd.api.types.is_datetime64_any_dtype(values):
        missing = values.isna()
        if missing.any():
            raise HpodError(f"{where}: row {int(missing.to_numpy().argmax())} has no date")
        return values
    text = values.astype(str).str.strip()
    if date_format is not None:
        parsed = pd.to_datetime(text, format=date_format, errors="coerce")
        unread = parsed.isna()
        if unread.any():
            row = int(unread.to_numpy().argmax())
            raise HpodError(f"{where}: {text.iloc[row]!r} (row {row}) does not match data.date_format {date_format!r}")
        return parsed
    readings = {}
    for candidate in DATE_FORMATS:
        parsed = pd.to_datetime(text, format=candidate, errors="coerce")
        if not parsed.isna().any() and not any(parsed.equals(p) for p in readings.values()):
            readings[candidate] = parsed
    if len(readings) == 1:
        return next(iter(readings.values()))
    if len(readings) > 1:
        raise HpodError(
            f"{where}: dates such as {text.iloc[0]!r} read as {' or '.join(readings)}; "
            "set data.date_format in the job file"
        )
    row = int(_first_unreadable(text))
    raise HpodError(f"{where}: {text.iloc[row]!r} (row {row}) is not a date; set data.date_format if it is one")


def _first_unreadable(text: pd.Series) -> int:
    """The row most formats fail on: the one to show a user."""
    fails = sum(pd.to_datetime(text, format=f, errors="coerce").isna().to_numpy().astype(int) for f in DATE_FORMATS)
    return int(fails.argmax())
