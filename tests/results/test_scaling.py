"""The scaling fit on planted laws: intervals that cover, and verdicts that say when there is none.

Per-sample losses are simulated as a real evaluation carries them: a per-sample difficulty shared
by every budget (serially correlated, as daily returns are), noise of each budget's own model
per sample, and seed noise; the report's own bootstrap (`resample.py`) and fit run on them."""

from __future__ import annotations

import numpy as np
import pytest

from hpod.results.resample import block_counts, replicate_losses
from hpod.results.scaling import ALPHA_GRID, fit_law, law_interval, verdict

BUDGETS = np.geomspace(5e4, 5e8, 5)
REPEATS, RESAMPLES = 100, 200


def law(n):
    return 0.30 + 2.0 * n**-0.25


def simulate(rng, n, losses, samples=1000, seeds=3, seed_sd=0.01):
    """(budgets, seeds, samples) per-sample losses whose expectation is `losses` per budget."""
    shocks = rng.normal(size=samples)
    ar = np.empty(samples)
    ar[0] = shocks[0]
    for i in range(1, samples):
        ar[i] = 0.8 * ar[i - 1] + 0.6 * shocks[i]
    shared = np.exp(0.5 * ar)
    shared /= shared.mean()
    own = 1 + 0.3 * rng.normal(size=(len(n), 1, samples))
    seed = seed_sd * rng.normal(size=(len(n), seeds, 1))
    return losses[:, None, None] * (shared[None, None, :] * own + seed)


def fit_with_interval(rng, n, losses, offset_sd: float = 0.0, scatter: float = 0.0):
    """The fit and interval of one simulated study; `offset_sd` plants a per-budget offset (the
    search landing on a slightly better or worse configuration), `scatter` is what the interval
    is told of it."""
    runs = simulate(rng, n, losses + offset_sd * rng.normal(size=len(n)))
    points = runs.mean(axis=(1, 2))
    counts = block_counts(runs.shape[2], 20, RESAMPLES, rng)
    replicates = np.stack([replicate_losses(runs[b], counts, rng) for b in range(len(n))], axis=1)
    return fit_law(n, points), law_interval(n, points, replicates, scatter, seed=int(rng.integers(2**31)))


def verdicts(rng, n, losses, repeats: int = REPEATS, **kwargs) -> list[str]:
    return [v for v, _ in judged(rng, n, losses, repeats, **kwargs)]


def judged(rng, n, losses, repeats: int = REPEATS, **kwargs) -> list[tuple[str, str]]:
    return [verdict(len(n), *fit_with_interval(rng, n, losses, **kwargs), []) for _ in range(repeats)]


def test_the_fit_recovers_a_noiseless_law_to_the_grid_step():
    fit = fit_law(BUDGETS, law(BUDGETS))
    assert abs(fit.alpha - 0.25) <= ALPHA_GRID[1] and abs(fit.E - 0.30) < 0.01


def test_nominal_95_percent_intervals_cover_a_planted_exponent_in_at_least_90_percent_of_repeats():
    rng = np.random.default_rng(1)
    results = [fit_with_interval(rng, BUDGETS, law(BUDGETS)) for _ in range(REPEATS)]
    coverage = np.mean([interval.alpha.covers(0.25) for _, interval in results])
    laws = np.mean([verdict(5, fit, interval, [])[0] == "law" for fit, interval in results])
    assert coverage >= 0.90, coverage
    assert laws >= 0.90, laws


def test_with_a_planted_search_offset_the_interval_told_of_it_still_covers_in_90_percent():
    """A per-budget offset of sd 0.003 (the measured gap between best trial and seed mean) drops
    coverage to 0.73–0.81 when the interval leaves it out; told of it, the interval covers."""
    rng = np.random.default_rng(4)
    shallow = np.geomspace(5e4, 5e8, 5)
    results = [fit_with_interval(rng, shallow, law(shallow), offset_sd=0.003, scatter=0.003) for _ in range(REPEATS)]
    coverage = np.mean([interval.alpha.covers(0.25) for _, interval in results])
    assert coverage >= 0.90, coverage


def test_flat_rising_and_u_shaped_losses_get_no_scaling_detected_in_at_least_95_percent_of_repeats():
    rng = np.random.default_rng(2)
    decades = np.log10(BUDGETS / BUDGETS[0])
    flat = np.full(len(BUDGETS), 0.6885)
    rising = 0.6885 + 0.002 * decades
    u_shaped = 0.6885 + 0.004 * (decades - 2) ** 2
    for losses in (flat, rising, u_shaped):
        found = verdicts(rng, BUDGETS, losses)
        assert np.mean([v == "no scaling detected" for v in found]) >= 0.95, found


def test_no_scaling_states_the_fall_it_could_have_detected_and_rising_losses_are_named():
    rng = np.random.default_rng(6)
    flat = judged(rng, BUDGETS, np.full(len(BUDGETS), 0.6885), repeats=20)
    stated = [float(r.split("a fall of ")[1].split(" ")[0]) for _, r in flat if "would have been detected" in r]
    assert len(stated) >= 18 and all(0 < fall < 0.05 for fall in stated), flat
    rising = judged(rng, BUDGETS, 0.6885 + 0.02 * np.log10(BUDGETS / BUDGETS[0]), repeats=20)
    assert all(v == "no scaling detected" and "rises by" in r for v, r in rising), rising


@pytest.mark.parametrize(
    ("budgets", "lower"),
    [(5, 0.03), pytest.param(5, 0.007, marks=pytest.mark.slow), pytest.param(7, 0.007, marks=pytest.mark.slow)],
)
def test_one_low_budget_does_not_make_a_law_in_more_than_5_percent_of_200_repeats(budgets, lower):
    """Flat losses with only the largest budget lower: by 0.007 (the issue's case; here within
    the simulated noise) it was `law` in 15–22% of repeats when α's lower end at the grid's first
    step passed; by 0.03 (beyond the noise) only the bound, lack-of-fit and drop-one tests stand
    between it and a law."""
    rng = np.random.default_rng(5)
    n = np.geomspace(5e4, 5e8, budgets)
    losses = np.full(budgets, 0.4300)
    losses[-1] -= lower
    found = verdicts(rng, n, losses, repeats=200)
    assert np.mean([v == "law" for v in found]) <= 0.05, found


def test_a_law_over_four_budgets_is_underdetermined_and_over_cells_without_skill_is_no_law():
    rng = np.random.default_rng(3)
    fit, interval = fit_with_interval(rng, BUDGETS[:4], law(BUDGETS[:4]))
    assert verdict(4, fit, interval, [])[0] == "underdetermined"
    result, reason = verdict(4, fit, interval, ["2M h1"])
    assert result == "no scaling detected" and "2M h1" in reason
    assert verdict(5, fit, None, [])[0] == "no scaling detected"


def test_rising_losses_fit_flat_with_no_exponent():
    fit = fit_law(BUDGETS, 0.6 + 0.01 * np.arange(5))
    assert fit.A == 0 and fit.alpha == 0
