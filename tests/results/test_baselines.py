"""Baselines against closed forms on small synthetic series."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hpod.job import DataSpec
from hpod.results.baselines import TRAILING_ROWS, baseline_losses, summary
from hpod.trial.data import load_dataset


def series(tmp_path, y: np.ndarray, x: np.ndarray) -> DataSpec:
    path = tmp_path / "series.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(path, index=False)
    return DataSpec(path=str(path), features=("x",), target="column", target_column="y", context=10,
                    patch_len=5, stride=5, min_val_samples=50)  # fmt: skip


def test_the_constant_baseline_of_a_binary_target_is_the_cross_entropy_of_the_train_rate(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < np.r_[np.full(1400, 0.2), np.full(600, 0.5)]).astype(float)
    data = load_dataset(series(tmp_path, y, rng.normal(size=2000)), 1)
    losses = summary(baseline_losses(data))
    q = float(data.targets[data.splits["train"]].mean())
    p = float(data.targets[data.splits["val"]].mean())
    assert losses["constant"]["val_loss"] == pytest.approx(-(p * math.log(q) + (1 - p) * math.log(1 - q)), rel=1e-6)
    assert "zero" not in losses


def test_regression_baselines_are_the_variance_the_offset_and_an_exact_linear_fit(tmp_path):
    """y one row ahead is 3 + 2·x of this row: a linear model of the last row is exact; the
    constant's loss is the val spread about the train mean; zero's is about 0 in original units."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=2000)
    y = 3 + 2 * np.r_[0.0, x[:-1]]
    data = load_dataset(series(tmp_path, y, x), 1)
    ends = data.splits["val"].numpy()
    losses = summary(baseline_losses(data))
    truth = (y[ends + 1] - data.target_mean) / data.target_std
    assert losses["constant"]["val_loss"] == pytest.approx(float(np.mean(truth**2)), rel=1e-4)
    zero = (0 - data.target_mean) / data.target_std
    assert losses["zero"]["val_loss"] == pytest.approx(float(np.mean((truth - zero) ** 2)), rel=1e-4)
    assert losses["linear"]["val_loss"] < 1e-3 * losses["constant"]["val_loss"]


@pytest.mark.parametrize("horizon", [1, 5])
def test_the_trailing_baseline_is_the_rate_of_the_labels_known_when_the_window_ends(tmp_path, horizon):
    """With the label of row t being y[t + h], the labels known at row r are y up to r itself:
    the trailing rate is pandas' rolling mean of y, computed here without hpod's arithmetic. The
    base rate moves (0.2, then 0.5) where val begins, so the trailing rate beats the constant."""
    rng = np.random.default_rng(2)
    y = (rng.random(2000) < np.r_[np.full(1400, 0.2), np.full(600, 0.5)]).astype(float)
    data = load_dataset(series(tmp_path, y, rng.normal(size=2000)), horizon)
    ends = data.splits["val"].numpy()
    rows = TRAILING_ROWS
    known = pd.Series(y).rolling(rows).sum().to_numpy()[ends]
    rate = (known + 0.5) / (rows + 1)
    label = y[ends + horizon]
    expected = -(label * np.log(rate) + (1 - label) * np.log(1 - rate)).mean()
    losses = summary(baseline_losses(data))
    assert losses["trailing"]["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert losses["trailing"]["val_loss"] < losses["constant"]["val_loss"] - 0.01
