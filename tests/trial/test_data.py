import dataclasses
import gzip

import numpy as np
import pandas as pd
import pytest

from hpod.errors import HpodError
from hpod.job import DataSpec
from hpod.trial.data import (
    DERIVED_FEATURES,
    WARMUP_ROWS,
    bundled_path,
    chronological_splits,
    data_shape,
    load_dataset,
    make_target,
)


def raw_closes() -> pd.DataFrame:
    with gzip.open(bundled_path(), "rt") as f:
        return pd.read_csv(f).sort_values("date").reset_index(drop=True)


def test_bundled_data_is_the_full_sp500_series():
    frame = raw_closes()
    assert len(frame) == 16_607
    assert frame["date"].iloc[0] == "1950-01-03" and frame["date"].iloc[-1] == "2015-12-31"


def test_threshold_label_uses_the_horizon_on_hand_checked_prices():
    prices = np.array([100.0, 100.5, 99.0, 100.2, 100.9, 101.5, 98.0])
    spec = DataSpec()
    h1, h5 = make_target(prices, spec, 1), make_target(prices, spec, 5)
    # h1: next close vs this one; +0.5%, -1.5%, +1.2%, +0.7%, +0.6%, -3.4%
    np.testing.assert_array_equal(h1[:6], [0, 0, 1, 0, 0, 0])
    # h5: best close of the next five; row 0 reaches 101.5 (+1.5%), row 1 only +0.995%
    np.testing.assert_array_equal(h5[:2], [1, 0])
    assert np.isnan(h1[6]) and np.isnan(h5[2:]).all()


def test_return_target_is_the_h_day_log_return():
    prices = np.array([100.0, 110.0, 121.0, 133.1])
    np.testing.assert_allclose(make_target(prices, DataSpec(target="return"), 2)[:2], np.log([1.21, 1.21]))


def test_dataset_labels_follow_the_study_horizon_on_real_rows():
    """The replaced system's h5 studies silently trained on 1-day labels."""
    frame = raw_closes()
    closes = frame["close"].to_numpy()[WARMUP_ROWS:]
    h1, h5 = load_dataset(DataSpec(), 1), load_dataset(DataSpec(), 5)
    rows = h5.splits["val"][:200]
    for t in rows[:20].tolist():
        assert h1.targets[t] == float(closes[t + 1] / closes[t] - 1 >= 0.01)
        assert h5.targets[t] == float(closes[t + 1 : t + 6].max() / closes[t] - 1 >= 0.01)
    assert (h1.targets[rows] != h5.targets[rows]).sum() > 20
    assert h5.targets[h5.splits["train"]].mean() > h1.targets[h1.splits["train"]].mean()


def test_splits_are_chronological_disjoint_and_separated_by_context_plus_horizon():
    data = load_dataset(DataSpec(), 5)
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    context = data.shape.context
    assert train.max() + 5 < val.min() - context + 1  # train labels end before val windows start
    assert val.max() + 5 < test.min() - context + 1
    assert len(train) > len(val) > 500 and len(test) > 500
    assert data.features.shape[1] == len(DERIVED_FEATURES) == data_shape(DataSpec()).n_features


def test_features_are_normalised_with_train_statistics_only():
    data = load_dataset(DataSpec(), 1)
    train_rows = data.features[: int(data.splits["train"][-1]) + 1]
    assert train_rows.mean(0).abs().max() < 1e-3
    assert (train_rows.std(0) - 1).abs().max() < 1e-2
    later = data.features[int(data.splits["val"][0]) :]
    assert (later.mean(0) - train_rows.mean(0)).abs().max() > 0.05  # later rows keep their drift


def test_chronological_splits_leave_the_gap_between_parts():
    (a, b), (c, d), (e, f) = chronological_splits(1000, 10, (0.7, 0.15, 0.15))
    assert a == 0 and c - b == 10 and e - d == 10 and f == 1000


def write_csv(tmp_path, frame: pd.DataFrame):
    path = tmp_path / "user.csv"
    frame.to_csv(path, index=False)
    return str(path)


def user_frame(rows: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x1": rng.normal(size=rows), "x2": rng.normal(size=rows), "y": rng.normal(size=rows)})


def user_spec(path: str, **kw) -> DataSpec:
    return DataSpec(path=path, features=("x1", "x2"), target="column", target_column="y", min_val_samples=100, **kw)


def test_user_csv_with_named_columns_loads_as_a_regression(tmp_path):
    data = load_dataset(user_spec(write_csv(tmp_path, user_frame())), 3)
    assert data.task == "regression" and data.features.shape == (3000, 2)
    y = user_frame()["y"]
    original = data.targets[100] * data.target_std + data.target_mean
    assert float(original) == pytest.approx(y[103], abs=1e-5)


def test_a_regression_target_is_standardised_with_train_statistics_only(tmp_path):
    data = load_dataset(user_spec(write_csv(tmp_path, user_frame())), 3)
    train = data.targets[data.splits["train"]].double()
    assert abs(float(train.mean())) < 1e-6 and float(train.std()) == pytest.approx(1.0, abs=1e-3)
    assert data.target_std == pytest.approx(float(user_frame()["y"][data.splits["train"].numpy() + 3].std()), rel=1e-3)


def test_user_parquet_loads_like_csv(tmp_path):
    path = tmp_path / "user.parquet"
    user_frame().to_parquet(path)
    from_parquet = load_dataset(user_spec(str(path)), 3)
    from_csv = load_dataset(user_spec(write_csv(tmp_path, user_frame())), 3)
    assert np.allclose(from_parquet.features, from_csv.features)


def test_a_string_column_is_named_with_an_example_value(tmp_path):
    frame = user_frame()
    frame["x2"] = ["low", "normal", "high"] * 1000
    with pytest.raises(HpodError, match=r"column 'x2' is not numeric \(row 0: 'low'\)"):
        load_dataset(user_spec(write_csv(tmp_path, frame)), 1)


def test_nan_and_inf_are_named_with_their_column_and_row(tmp_path):
    frame = user_frame()
    frame.loc[7, "x1"] = np.nan
    with pytest.raises(HpodError, match="column 'x1' has 1 NaN/inf values \\(first at row 7\\)"):
        load_dataset(user_spec(write_csv(tmp_path, frame)), 1)


def test_a_missing_target_column_is_named(tmp_path):
    spec = dataclasses.replace(user_spec(write_csv(tmp_path, user_frame())), target_column="label")
    with pytest.raises(HpodError, match="column 'label' is missing"):
        load_dataset(spec, 1)


def test_too_few_rows_for_context_and_horizon_are_refused(tmp_path):
    with pytest.raises(HpodError, match="too few for a context of 60 and horizon h5"):
        load_dataset(user_spec(write_csv(tmp_path, user_frame(150))), 5)


def test_a_validation_split_below_the_minimum_is_refused_with_the_numbers(tmp_path):
    spec = dataclasses.replace(user_spec(write_csv(tmp_path, user_frame(1000))), min_val_samples=500)
    with pytest.raises(HpodError, match=r"validation split would hold 122 samples, fewer than the minimum 500"):
        load_dataset(spec, 1)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(HpodError, match="does not exist"):
        load_dataset(DataSpec(path=str(tmp_path / "nope.csv")), 1)
