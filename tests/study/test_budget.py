import pytest

from hpod.errors import HpodError
from hpod.study.budget import format_budget, parse_budget, parse_horizon, parse_list


@pytest.mark.parametrize(
    ("text", "count"),
    [("2M", 2_000_000), ("20M", 20_000_000), ("200M", 200_000_000), ("2B", 2_000_000_000),
     ("500K", 500_000), ("1.5M", 1_500_000), ("123456", 123_456), ("100k", 100_000), (" 2m ", 2_000_000)],
)  # fmt: skip
def test_parse_budget_accepts_suffixes_decimals_and_integers(text, count):
    assert parse_budget(text) == count


@pytest.mark.parametrize("text", ["", "2X", "-2M", "0", "M", "1.5", "2MB", "1e6", "0.0001K"])
def test_parse_budget_rejects_anything_else_naming_the_input(text):
    with pytest.raises(HpodError, match="budget"):
        parse_budget(text)


@pytest.mark.parametrize(("text", "days"), [("h1", 1), ("h3", 3), ("h5", 5), ("H20", 20)])
def test_parse_horizon_accepts_h_and_a_positive_count(text, days):
    assert parse_horizon(text) == days


@pytest.mark.parametrize("text", ["h0", "5", "h-1", "hx", "h1.5", "d5", ""])
def test_parse_horizon_rejects_anything_else(text):
    with pytest.raises(HpodError, match="horizon"):
        parse_horizon(text)


def test_format_budget_round_trips_with_parse_budget():
    for count in (2_000_000, 1_500_000, 500_000, 2_000_000_000, 123_456):
        assert parse_budget(format_budget(count)) == count


def test_parse_list_keeps_order_and_drops_repeats():
    assert parse_list("20M,2M,20M", parse_budget) == [20_000_000, 2_000_000]
    with pytest.raises(HpodError):
        parse_list(" , ", parse_budget)
