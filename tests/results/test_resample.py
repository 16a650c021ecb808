"""The moving-block bootstrap and the seed resampling the report's standard errors rest on."""

from __future__ import annotations

import numpy as np
import pytest

from hpod.results.resample import block_counts, resampled_means, resampled_seeds


def test_each_replicate_draws_n_samples_in_whole_blocks():
    counts = block_counts(103, 20, 50, np.random.default_rng(0))
    assert counts.shape == (50, 103) and (counts.sum(axis=1) == 103).all()


def test_blocks_keep_serial_correlation_that_single_draws_would_hide():
    """An AR(1) series with ρ = 0.9: the SE of its mean from blocks of 50 is far above the iid SE."""
    rng = np.random.default_rng(1)
    x = np.zeros(5000)
    for i in range(1, len(x)):
        x[i] = 0.9 * x[i - 1] + rng.normal()
    iid = resampled_means(x, block_counts(len(x), 1, 400, rng))[:, 0].std()
    blocks = resampled_means(x, block_counts(len(x), 50, 400, rng))[:, 0].std()
    assert blocks > 2.5 * iid  # the true ratio is sqrt((1 + ρ) / (1 − ρ)) ≈ 4.4


def test_seed_resampling_recovers_the_variance_of_a_mean_of_k_seeds():
    """With 3 seeds a plain bootstrap gives 2/3 of the variance; the widened one all of it."""
    rng = np.random.default_rng(2)
    seeds = rng.normal(size=(20_000, 3))  # many independent sets of 3 seed losses, variance 1
    means = resampled_seeds(seeds, rng)
    spread = (means - seeds.mean(axis=1)).var()
    assert spread == pytest.approx(1 / 3, rel=0.05)
