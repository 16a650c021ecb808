"""The scaling law L(N) = E + A·N^(−α), fitted to the best loss of each parameter budget.

The fit follows Hoffmann et al. (2022, "Chinchilla", appendix D.2): minimise the summed Huber
loss (δ = 1e−3) of residuals between log L and log(E + A·N^(−α)), parametrised as
logaddexp(e, a − α·log N), with L-BFGS from a grid of starting points, keeping the best. The
confidence interval is a bootstrap: within each budget the trials are resampled with
replacement, the resample's best trial is that budget's point, and the law is fitted again.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

HUBER_DELTA = 1e-3
PARAMETERS = 3  # E, A, α: fewer budgets than this cannot be fitted
ALPHA_STARTS = (0.05, 0.2, 0.5, 1.0)
E_FRACTIONS = (0.2, 0.6, 0.9)  # starting E as a fraction of the smallest loss
A_STARTS = (0.0, 2.5, 5.0, 10.0)  # log A
SAME_MINIMUM = 1e-9  # objective values this close count as one minimum


@dataclass(frozen=True)
class Fit:
    E: float
    A: float
    alpha: float
    objective: float  # summed Huber loss at the optimum
    converged: bool  # the optimiser reported success at the best start
    agreeing_starts: int  # starting points that reached the best minimum
    starts: int

    def predict(self, n: np.ndarray | float) -> np.ndarray | float:
        return self.E + self.A * np.power(n, -self.alpha)


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    small = np.abs(r) <= delta
    return np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))


def objective(theta: np.ndarray, log_n: np.ndarray, log_loss: np.ndarray) -> tuple[float, np.ndarray]:
    """The summed Huber loss of log-residuals and its gradient in (e, a, α)."""
    e, a, alpha = theta
    decay = a - alpha * log_n
    predicted = np.logaddexp(e, decay)
    r = log_loss - predicted
    slope = np.clip(r, -HUBER_DELTA, HUBER_DELTA)  # Huber's derivative
    share_e, share_a = np.exp(e - predicted), np.exp(decay - predicted)  # d predicted / d e, d a
    grad = -np.array([(slope * share_e).sum(), (slope * share_a).sum(), -(slope * share_a * log_n).sum()])
    return float(huber(r).sum()), grad


def starting_points(losses: np.ndarray) -> list[tuple[float, float, float]]:
    e_starts = [math.log(f * float(losses.min())) for f in E_FRACTIONS]
    return list(itertools.product(e_starts, A_STARTS, ALPHA_STARTS))


def fit_law(n: np.ndarray, losses: np.ndarray, starts: list[tuple[float, float, float]] | None = None) -> Fit:
    """The best of L-BFGS runs from `starts` (default: the grid)."""
    log_n, log_loss = np.log(np.asarray(n, dtype=float)), np.log(np.asarray(losses, dtype=float))
    starts = starts or starting_points(np.asarray(losses, dtype=float))
    bounds = [(None, None), (None, None), (0.0, 3.0)]
    results = [
        minimize(objective, np.array(s), args=(log_n, log_loss), jac=True, method="L-BFGS-B", bounds=bounds)
        for s in starts
    ]
    best = min(results, key=lambda r: r.fun)
    agreeing = sum(abs(r.fun - best.fun) <= SAME_MINIMUM + 1e-6 * abs(best.fun) for r in results)
    e, a, alpha = best.x
    return Fit(math.exp(e), math.exp(a), float(alpha), float(best.fun), bool(best.success), agreeing, len(starts))


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Bootstrap:
    alpha: Interval
    E: Interval
    resamples: int
    curves: np.ndarray  # (resamples, points) predicted losses on `grid`, for the plot's band
    grid: np.ndarray


def bootstrap(
    trials_by_budget: list[list[tuple[int, float]]],
    fit: Fit,
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> Bootstrap:
    """Percentile intervals for α and E: resample each budget's (params, loss) trials, take the
    resample's best as the budget's point, refit from the full fit's optimum."""
    rng = np.random.default_rng(seed)
    all_n = [n for trials in trials_by_budget for n, _ in trials]
    grid = np.geomspace(min(all_n) / 2, max(all_n) * 2, 100)
    start = [(math.log(fit.E), math.log(fit.A), fit.alpha)]
    alphas, es, curves = [], [], []
    for _ in range(resamples):
        points = []
        for trials in trials_by_budget:
            picks = rng.integers(0, len(trials), len(trials))
            points.append(min((trials[i] for i in picks), key=lambda t: t[1]))
        n, losses = zip(*points, strict=True)
        # from the full fit's optimum and two grid points: 48 starts per resample would take minutes
        refit = fit_law(np.array(n), np.array(losses), start + starting_points(np.array(losses))[::24])
        alphas.append(refit.alpha)
        es.append(refit.E)
        curves.append(refit.predict(grid))
    tail = (1 - level) / 2 * 100
    low, high = tail, 100 - tail
    return Bootstrap(
        alpha=Interval(*np.percentile(alphas, [low, high]).tolist()),
        E=Interval(*np.percentile(es, [low, high]).tolist()),
        resamples=resamples,
        curves=np.array(curves),
        grid=grid,
    )
