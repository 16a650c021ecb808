"""The scaling law L(N) = E + A·N^(−α) over the budgets of one job and horizon, its interval
from the noise the losses really carry, and a verdict on whether there is a law at all.

The fit minimises the squared relative residuals Σ((L − E − A·N^−α) / L)², which for losses a
few percent apart is the squared log-residual of Hoffmann et al. (2022, App. D.2), with E ≥ 0,
A ≥ 0 and α on a grid over [0, 3]: for a fixed α the problem is linear in (E, A), so it is
solved exactly at every grid point and the best point kept. No starting points to agree or
disagree, and the same estimator runs vectorised over thousands of bootstrap replicates (the
Huber fit from 48 starts took seconds per fit; its δ = 1e-3 guards against outliers among many
points, which five seed-averaged budgets do not have).

The interval resamples what the losses depend on (`resample.py`): the evaluation blocks, shared
by every budget, and each budget's seeds. Besiroglu et al. (2024) showed how narrow intervals
mislead when the noise all points share is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA_MAX = 3.0
ALPHA_GRID = np.linspace(0.0, ALPHA_MAX, 601)  # steps of 0.005
PARAMETERS = 3  # E, A, α: fewer budgets than this cannot be fitted
LAW_BUDGETS = 5  # fewer budgets leave a three-parameter fit underdetermined
LEVEL = 0.95
POWER_SE = 2.84  # a true fall this many SEs large passes the 2 SE test in 80% of studies


@dataclass(frozen=True)
class Fit:
    E: float
    A: float
    alpha: float
    rss: float  # summed squared relative residuals at the optimum

    def predict(self, n: np.ndarray | float) -> np.ndarray | float:
        return self.E + self.A * np.power(n, -self.alpha)


def fit_laws(n: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """E, A, α and rss of each row of `losses` (rows, budgets), fitted to parameter counts `n`."""
    n = np.asarray(n, dtype=float)
    y = np.atleast_2d(np.asarray(losses, dtype=float))
    n0 = n.min()
    x = (n[None, :] / n0) ** -ALPHA_GRID[:, None]  # (G, P), scaled to 1 at the smallest budget
    w = 1.0 / y**2  # relative residuals
    sw, sy, syy = w.sum(1)[:, None], (w * y).sum(1)[:, None], (w * y * y).sum(1)[:, None]
    sx, sxx, sxy = w @ x.T, w @ (x * x).T, (w * y) @ x.T  # (R, G)

    def rss(e, a):
        return syy - 2 * e * sy - 2 * a * sxy + e * e * sw + 2 * e * a * sx + a * a * sxx

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        det = sw * sxx - sx * sx
        e_free, a_free = (sxx * sy - sx * sxy) / det, (sw * sxy - sx * sy) / det
        a_only = sxy / sxx
        flat = np.broadcast_to(sy / sw, sx.shape)
        candidates = [  # (E, A) of the unconstrained solution, E = 0, and A = 0 (flat)
            (e_free, a_free, (det > 1e-12 * sw * sxx) & (e_free >= 0) & (a_free >= 0)),
            (np.zeros_like(sx), a_only, a_only >= 0),
            (flat, np.zeros_like(sx), np.ones_like(sx, dtype=bool)),
        ]
        costs = np.stack([np.where(ok, rss(e, a), np.inf) for e, a, ok in candidates])  # (3, R, G)
    which = costs.argmin(axis=0)
    cost = np.take_along_axis(costs, which[None], axis=0)[0]
    e_all = np.choose(which, [np.broadcast_to(c[0], sx.shape) for c in candidates])
    a_all = np.choose(which, [np.broadcast_to(c[1], sx.shape) for c in candidates])
    g = cost.argmin(axis=1)
    rows = np.arange(len(y))
    alpha = ALPHA_GRID[g]
    a = a_all[rows, g] * n0**alpha  # undo the scaling of x
    alpha = np.where(a > 0, alpha, 0.0)  # a flat fit has no exponent
    return e_all[rows, g], a, alpha, cost[rows, g]


def fit_law(n: np.ndarray, losses: np.ndarray) -> Fit:
    e, a, alpha, rss = fit_laws(n, np.asarray(losses, dtype=float)[None, :])
    return Fit(float(e[0]), float(a[0]), float(alpha[0]), float(rss[0]))


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high))


@dataclass(frozen=True)
class LawInterval:
    alpha: Interval
    E: Interval
    drop: float  # loss at the smallest budget minus loss at the largest
    drop_se: float  # its bootstrap standard error
    resamples: int
    curves: np.ndarray  # (resamples, points) predicted losses on `grid`, for the plot's band
    grid: np.ndarray
    scatter: float = 0.0  # sd of the per-budget offset added to each replicate (the search's scatter)
    fall: float = 0.0  # the fitted law's fall from the smallest budget to the largest
    fall_se: float = 0.0
    lack_of_fit_p: float = 1.0  # share of refits on noise about the fitted law with a worse fit
    without: tuple[float | None, float] = (None, 1.0)  # (budget N, α's lower end) of the worst drop-one refit


def law_interval(
    n: np.ndarray, losses: np.ndarray, replicates: np.ndarray, scatter: float = 0.0, seed: int = 0
) -> LawInterval:
    """Percentile intervals of α and E from `replicates` (R, budgets) of the budgets' losses,
    each a bootstrap draw of the same blocks and of each budget's seeds, with an independent
    offset of sd `scatter` per budget and replicate: a search run again would not land on the same
    configuration, and that scatter between budgets is noise the law must stand above. Also the
    fitted fall and its SE, a residual-bootstrap lack-of-fit test, and drop-one-budget refits."""
    n = np.asarray(n, dtype=float)
    rng = np.random.default_rng(seed)
    draws = replicates + scatter * rng.standard_normal(replicates.shape)
    e, a, alpha, _ = fit_laws(n, draws)
    grid = np.geomspace(min(n) / 2, max(n) * 2, 100)
    small, large = int(np.argmin(n)), int(np.argmax(n))
    fit = fit_law(n, losses)
    falls = a * (n[small] ** -alpha - n[large] ** -alpha)
    return LawInterval(
        alpha=percentile_interval(alpha),
        E=percentile_interval(e),
        drop=float(losses[small] - losses[large]),
        drop_se=float(np.std(draws[:, small] - draws[:, large], ddof=1)),
        resamples=len(draws),
        curves=e[:, None] + a[:, None] * grid[None, :] ** -alpha[:, None],
        grid=grid,
        scatter=scatter,
        fall=float(fit.predict(n[small]) - fit.predict(n[large])),
        fall_se=float(np.std(falls, ddof=1)),
        lack_of_fit_p=lack_of_fit(n, fit, draws),
        without=weakest_drop_one(n, draws),
    )


def lack_of_fit(n: np.ndarray, fit: Fit, draws: np.ndarray) -> float:
    """The share of refits to the fitted law plus the replicates' own noise (centred, so shared
    noise stays shared) whose residuals exceed the observed ones: small when the losses stray from
    L = E + A·N^−α by more than their noise (a U shape, a step)."""
    centred = fit.predict(n)[None, :] + draws - draws.mean(axis=0, keepdims=True)
    return float(np.mean(fit_laws(n, centred)[3] >= fit.rss))


def weakest_drop_one(n: np.ndarray, draws: np.ndarray) -> tuple[float | None, float]:
    """(N, α's lower end) of the budget whose removal leaves α's interval lowest: a law that one
    budget makes is no law. Left out of four budgets, one leaves an exact three-parameter fit that
    tells nothing; such a fit is underdetermined anyway."""
    if len(n) <= PARAMETERS + 1:
        return (None, 1.0)
    lows = [percentile_interval(fit_laws(np.delete(n, b), np.delete(draws, b, axis=1))[2]).low for b in range(len(n))]
    b = int(np.argmin(lows))
    return (float(n[b]), lows[b])


def power(interval: LawInterval) -> str:
    """What "no scaling" could have missed: the fall across the budgets' range that the 2 SE test
    detects four times in five (2.8 SE: 2 for the test, 0.84 for 80% power), and what halves it.
    The SE of the fall is the seeds' and the samples' noise, each falling as 1/√ of its count."""
    return (
        f"a fall of {POWER_SE * interval.drop_se:.2g} or more would have been detected with 80% power; "
        "halving that takes 4× the seed runs and 4× the evaluation samples"
    )


def verdict(budgets: int, fit: Fit, interval: LawInterval | None, no_skill: list[str]) -> tuple[str, str]:
    """("law" | "no scaling detected" | "underdetermined", the reason). A law only when the
    losses fall with N beyond their noise: the largest and smallest budgets differ by more than
    2 SE and so does the fitted law's fall, α's interval lies clear of 0 (above the grid's first
    step) and of its upper bound, and stays clear of 0 with any one budget left out, the law fits
    (lack-of-fit p ≥ 0.05), every cell beats the constant predictor by 2 SE on val and test, and
    at least LAW_BUDGETS budgets pin three parameters."""
    if interval is None:
        return "no scaling detected", "no per-sample losses to measure the noise with (evaluation missing)"
    if no_skill:
        return "no scaling detected", f"no skill over the constant predictor at {', '.join(no_skill)}"
    if interval.drop < -2 * interval.drop_se:
        return "no scaling detected", (
            f"the loss rises by {-interval.drop:.4g} from the smallest to the largest budget, "
            f"beyond 2 SE ({2 * interval.drop_se:.4g})"
        )
    if interval.drop <= 2 * interval.drop_se:
        return "no scaling detected", (
            f"the loss falls by {interval.drop:.4g} from the smallest to the largest budget, "
            f"within 2 SE ({2 * interval.drop_se:.4g}); {power(interval)}"
        )
    if interval.fall <= 2 * interval.fall_se:
        return "no scaling detected", (
            f"the fitted law falls by {interval.fall:.4g} across the budgets, within 2 SE ({2 * interval.fall_se:.4g})"
        )
    step = ALPHA_GRID[1]
    low, high = interval.alpha.low, interval.alpha.high
    if low <= step or high > ALPHA_MAX - step:
        return "no scaling detected", f"α's 95% interval [{low:.3f}, {high:.3f}] reaches a bound of [0, {ALPHA_MAX:g}]"
    if interval.lack_of_fit_p < 0.05:
        return "no scaling detected", (
            f"L = E + A·N^-α does not fit the losses (lack-of-fit p = {interval.lack_of_fit_p:.3f})"
        )
    left_out, low_without = interval.without
    if low_without <= step:
        return "no scaling detected", (
            f"without the {left_out:,.0f}-parameter budget α's interval reaches 0 (lower end {low_without:.3f}): "
            "one budget makes the law"
        )
    if budgets < LAW_BUDGETS:
        return "underdetermined", f"{budgets} budgets for {PARAMETERS} parameters; a law needs at least {LAW_BUDGETS}"
    return "law", (
        f"losses fall by {interval.drop:.4g} ± {interval.drop_se:.2g} (SE) across {budgets} budgets, "
        f"the law fits (lack-of-fit p = {interval.lack_of_fit_p:.2f}) and survives leaving out any one budget"
    )
