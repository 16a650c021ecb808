"""The bootstrap of what a reported loss depends on: the evaluation samples (in blocks, since
daily returns are serially correlated) and the training seeds.

Every cell of one job and horizon is evaluated on the same split, so one replicate draws one
set of blocks and applies it to every quantity of that split (each budget's model, each
baseline): the noise the cells share is resampled jointly, not as if it were independent.
"""

from __future__ import annotations

import math

import numpy as np


def block_counts(n: int, block: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates, n): how often each sample is drawn by a moving-block bootstrap of n samples
    in blocks of `block` consecutive ones (the last block cut to make n)."""
    block = max(1, min(block, n))
    blocks = math.ceil(n / block)
    starts = rng.integers(0, n - block + 1, size=(replicates, blocks))
    drawn = (starts[:, :, None] + np.arange(block)).reshape(replicates, -1)[:, :n]
    counts = np.zeros((replicates, n))
    np.add.at(counts, (np.arange(replicates)[:, None], drawn), 1.0)
    return counts


def resampled_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Means of per-sample `values` (runs, n) under each replicate's draw: (replicates, runs)."""
    return counts @ np.atleast_2d(values).T / counts.sum(axis=1, keepdims=True)


def resampled_seeds(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(replicates,) the mean over seeds drawn with replacement from (replicates, K). The draws'
    spread about the replicate's own mean is widened by sqrt(K / (K − 1)), since a bootstrap of
    K values underestimates their variance by (K − 1) / K (with K = 3, by a third). K = 1: the
    seed variance is unknown and left out."""
    replicates, k = per_seed.shape
    if k == 1:
        return per_seed[:, 0]
    picks = rng.integers(0, k, size=(replicates, k))
    drawn = np.take_along_axis(per_seed, picks, axis=1).mean(axis=1)
    centre = per_seed.mean(axis=1)
    return centre + math.sqrt(k / (k - 1)) * (drawn - centre)


def replicate_losses(runs: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(replicates,) the seed-mean loss of `runs` (K, n) per replicate: samples, then seeds."""
    return resampled_seeds(resampled_means(runs, counts), rng)


def standard_error(replicates: np.ndarray) -> float:
    return float(np.std(replicates, ddof=1))
