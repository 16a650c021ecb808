"""Loading, validating and shaping the data: features, the horizon's target, chronological splits.

Samples are windows ending at a row t: features of rows t-context+1..t, target about rows
t+1..t+h. Splits are chronological with a gap of context + h rows between them, so no window
or label of one split touches the rows of the next.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hpod.errors import HpodError
from hpod.job import DataSpec
from hpod.trial.frames import column_key, in_time_order, read_table
from hpod.trial.model import DataShape

OHLCV = ("open", "high", "low", "close", "volume")
COLUMN_NAME = re.compile(r"[\w .%()/-]{1,40}")
DERIVED_FEATURES = (
    "ret_1",  # log return over 1 row
    "ret_5",
    "ret_20",
    "range_hl",  # log(high / low)
    "body_oc",  # log(close / open)
    "vol_5",  # rolling std of ret_1
    "vol_20",
    "volume_z",  # log volume as a z-score over 20 rows
    "rsi_14",  # Wilder's RSI, scaled to [-0.5, 0.5]
    "macd",  # (EMA12 - EMA26) / close
    "dist_sma50",  # log(close / 50-row mean)
)
WARMUP_ROWS = 50  # rows the longest rolling feature needs before it is defined
SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    features: torch.Tensor  # (rows, C) float32, normalised with train statistics
    targets: torch.Tensor  # (rows,) float32; NaN where the horizon runs past the data
    splits: dict[str, torch.Tensor]  # window end rows of each split
    task: str  # "binary" (BCE) or "regression" (MSE)
    feature_names: tuple[str, ...]
    shape: DataShape
    horizon: int
    target_mean: float = 0.0  # a regression target was standardised: original = value × std + mean
    target_std: float = 1.0

    def constant_output(self) -> float:
        """The model output of the best constant predictor on train: the train positive rate's
        logit (BCE), or the train mean, 0 in standardised units (MSE)."""
        train = self.targets[self.splits["train"]]
        if self.task == "binary":
            return float(torch.logit(train.double().mean().clamp(1e-6, 1 - 1e-6)))
        return float(train.double().mean())

    @functools.cached_property
    def offsets(self) -> torch.Tensor:
        return torch.arange(-self.shape.context + 1, 1)  # (context,) rows before each window's end

    def windows(self, ends: torch.Tensor) -> torch.Tensor:
        """Input windows ending at these rows: (B, context, C)."""
        return self.features[ends[:, None] + self.offsets]

    def sizes(self) -> dict[str, int]:
        return {name: len(ends) for name, ends in self.splits.items()}


def feature_names(spec: DataSpec) -> tuple[str, ...]:
    return DERIVED_FEATURES if spec.features is None else spec.features


def data_shape(spec: DataSpec) -> DataShape:
    """The model's input shape, known from the job alone (no data is read)."""
    return DataShape(len(feature_names(spec)), spec.context, spec.patch_len, spec.stride)


def bundled_path() -> Path:
    return Path(str(resources.files("hpod") / "datasets" / "sp500.csv.gz"))


def data_file(spec: DataSpec) -> Path:
    return bundled_path() if spec.path is None else Path(spec.path).absolute()


def checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_unchanged(spec: DataSpec, sha256: str, what: str) -> None:
    """A queued job trains on the data it was queued with, or fails saying why."""
    path = data_file(spec)
    if not path.is_file():
        raise HpodError(f"data file {path} is gone since {what} was queued")
    if checksum(path) != sha256:
        raise HpodError(f"data file {path} changed since {what} was queued (sha256 differs)")


def read_frame(spec: DataSpec) -> pd.DataFrame:
    """Read the bundled series or the user's CSV/Parquet file, oldest row first."""
    path = bundled_path() if spec.path is None else Path(spec.path)
    frame = read_table(path, spec.max_mb)
    return in_time_order(frame, spec.date_column, spec.date_format, f"data file {path}")


def column_names(columns) -> str:
    """The file's columns as an error may list them: only names that look like column names, so
    that a file which is no table (a password file given as data) never has its lines quoted."""
    names = [str(c) for c in columns]
    if not all(COLUMN_NAME.fullmatch(n) for n in names) or len(names) > 20:
        return f"{len(names)} columns, not named like a table's"
    return f"columns: {', '.join(names)}"


def require_numeric(frame: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    """Every named column exists, is numeric and finite; errors name the column and a value."""
    for column in map(column_key, columns):
        if column not in frame.columns:
            raise HpodError(f"{source}: column {column!r} is missing ({column_names(frame.columns)})")
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            bad = values[pd.to_numeric(values, errors="coerce").isna()]
            example = bad.iloc[0] if len(bad) else values.iloc[0]
            raise HpodError(
                f"{source}: column {column!r} is not numeric (row {bad.index[0] if len(bad) else 0}: {example!r})"
            )
        finite = np.isfinite(values.to_numpy(dtype=float))
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise HpodError(
                f"{source}: column {column!r} has {int((~finite).sum())} NaN/inf values (first at row {row})"
            )


def derive_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Stationary features from OHLCV prices; the first WARMUP_ROWS rows are undefined."""
    close, volume = frame["close"], np.log1p(frame["volume"])
    ret_1 = np.log(close).diff()
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-delta).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    volume_std = volume.rolling(20).std().where(lambda s: s > 1e-8, np.inf)
    features = {
        "ret_1": ret_1,
        "ret_5": np.log(close / close.shift(5)),
        "ret_20": np.log(close / close.shift(20)),
        "range_hl": np.log(frame["high"] / frame["low"]),
        "body_oc": np.log(close / frame["open"]),
        "vol_5": ret_1.rolling(5).std(),
        "vol_20": ret_1.rolling(20).std(),
        "volume_z": (volume - volume.rolling(20).mean()) / volume_std,
        "rsi_14": gain / (gain + loss).where(lambda s: s > 0, np.inf) - 0.5,
        "macd": (close.ewm(span=12, adjust=False).mean() - close.ewm(span=26, adjust=False).mean()) / close,
        "dist_sma50": np.log(close / close.rolling(50).mean()),
    }
    return pd.DataFrame(features)[list(DERIVED_FEATURES)]


def make_target(prices: np.ndarray, spec: DataSpec, horizon: int) -> np.ndarray:
    """The label of each row t from rows t+1..t+horizon; NaN for the last `horizon` rows."""
    target = np.full(len(prices), np.nan)
    n = len(prices) - horizon
    if n <= 0:
        return target
    if spec.target == "threshold":
        future_max = np.lib.stride_tricks.sliding_window_view(prices[1:], horizon).max(axis=1)[:n]
        target[:n] = (future_max / prices[:n] - 1 >= spec.threshold_pct / 100).astype(float)
    elif spec.target == "return":
        target[:n] = np.log(prices[horizon:] / prices[:n])
    else:
        target[:n] = prices[horizon:]
    return target


def chronological_splits(n_ends: int, gap: int, fractions: tuple[float, ...]) -> list[tuple[int, int]]:
    """[start, stop) positions of train, val and test among n_ends windows, gap windows apart."""
    usable = n_ends - 2 * gap
    n_train = int(usable * fractions[0])
    n_val = int(usable * fractions[1])
    val_start = n_train + gap
    test_start = val_start + n_val + gap
    return [(0, n_train), (val_start, val_start + n_val), (test_start, max(test_start, n_ends))]


def load_dataset(spec: DataSpec, horizon: int) -> Dataset:
    """Read, validate, derive and split the data of a job for one horizon."""
    source = "bundled S&P 500 data" if spec.path is None else f"data file {spec.path}"
    frame = read_frame(spec)
    source_columns = OHLCV if spec.features is None else tuple(map(column_key, spec.features))
    target_source = column_key(spec.target_column if spec.target == "column" else spec.price_column)
    require_numeric(frame, tuple(dict.fromkeys((*source_columns, target_source))), source)
    prices = frame[target_source].to_numpy(dtype=float)
    if spec.target != "column" and (prices <= 0).any():
        row = int(np.flatnonzero(prices <= 0)[0])
        raise HpodError(
            f"{source}: column {target_source!r} must be positive for a {spec.target} target (row {row}: {prices[row]})"
        )
    if spec.features is None:
        features = derive_features(frame).iloc[WARMUP_ROWS:]
        prices = prices[WARMUP_ROWS:]
    else:
        features = frame[list(source_columns)]
    values = features.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise HpodError(f"{source}: derived features are not finite (zero or negative open/high/low/volume?)")
    target = make_target(prices, spec, horizon)
    return _split(values, target, spec, horizon, source)


def _split(values: np.ndarray, target: np.ndarray, spec: DataSpec, horizon: int, source: str) -> Dataset:
    ends = np.arange(spec.context - 1, len(values) - horizon)
    gap = spec.context + horizon
    if len(ends) <= 2 * gap:
        raise HpodError(
            f"{source}: {len(values)} rows are too few for a context of {spec.context} and horizon h{horizon}"
        )
    bounds = chronological_splits(len(ends), gap, spec.split)
    splits = {name: torch.from_numpy(ends[a:b]) for name, (a, b) in zip(SPLITS, bounds, strict=True)}
    n_val = len(splits["val"])
    if n_val < spec.min_val_samples:
        sizes = ", ".join(f"{len(e):,} {n}" for n, e in splits.items())
        raise HpodError(
            f"{source}: the validation split would hold {n_val:,} samples, fewer than the minimum "
            f"{spec.min_val_samples:,} ({len(values):,} rows give {sizes}); "
            "supply more rows or lower data.min_val_samples"
        )
    train_rows = values[: int(splits["train"][-1]) + 1]
    mean, std = train_rows.mean(axis=0), train_rows.std(axis=0)
    normalised = (values - mean) / np.where(std > 1e-12, std, 1.0)
    binary = spec.target == "threshold" or set(np.unique(target[~np.isnan(target)])) <= {0.0, 1.0}
    scale = (0.0, 1.0) if binary else target_scale(target[splits["train"].numpy()], source)
    return Dataset(
        features=torch.from_numpy(normalised.astype(np.float32)),
        targets=torch.from_numpy(((target - scale[0]) / scale[1]).astype(np.float32)),
        splits=splits,
        task="binary" if binary else "regression",
        feature_names=feature_names(spec),
        shape=data_shape(spec),
        horizon=horizon,
        target_mean=scale[0],
        target_std=scale[1],
    )


def target_scale(train_targets: np.ndarray, source: str) -> tuple[float, float]:
    """Train mean and std of a regression target: losses are in these standardised units, so one
    learning-rate range, one min_delta and one divergence factor fit every series."""
    std = float(train_targets.std())
    if not std > 1e-12:
        raise HpodError(f"{source}: the target is constant over the train split ({train_targets[0]:g})")
    return float(train_targets.mean()), std
