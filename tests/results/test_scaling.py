"""The scaling fit on planted laws: intervals that cover, and verdicts that say when there is none.

Per-sample losses are simulated as a real evaluation carries them: a per-sample difficulty shared
by every budget (serially correlated, as daily returns are), noise of each budget's own model
per sample, and seed noise; the report's own bootstrap (`resample.py`) and fit run on them."""

from __future__ import annotations

import numpy as np

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


def fit_with_interval(rng, n, losses):
    runs = simulate(rng, n, losses)
    points = runs.mean(axis=(1, 2))
    counts = block_counts(runs.shape[2], 20, RESAMPLES, rng)
    replicates = np.stack([replicate_losses(runs[b], counts, rng) for b in range(len(n))], axis=1)
    return fit_law(n, points), law_interval(n, points, replicates)


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


def test_flat_and_rising_losses_get_no_scaling_detected_in_at_least_95_percent_of_repeats():
    rng = np.random.default_rng(2)
    flat = np.full(len(BUDGETS), 0.6885)
    rising = 0.6885 + 0.002 * np.log10(BUDGETS / BUDGETS[0])
    for losses in (flat, rising):
        verdicts = [verdict(5, *fit_with_interval(rng, BUDGETS, losses), [])[0] for _ in range(REPEATS)]
        assert np.mean([v == "no scaling detected" for v in verdicts]) >= 0.95, verdicts


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
