"""The report's figure: per horizon, loss against parameters with its baselines, seed error bars,
the fitted law and its band; and loss against shape per budget (which shape wins at each budget
is the study's second question)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpod.results.report import Cell, LawReport
from hpod.study.budget import format_budget

FIGSIZE_IN, DPI = (13.0, 5.5), 100  # 1300 × 550 pixels


def plot_report(cells: list[Cell], reports: list[LawReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a workstation's service account
    import matplotlib.pyplot as plt

    horizons = sorted({c.horizon for c in cells})
    fig, axes = plt.subplots(1, len(horizons) + 1, figsize=FIGSIZE_IN, dpi=DPI, squeeze=False)
    for ax, horizon in zip(axes[0], horizons, strict=False):
        plot_law(ax, [c for c in cells if c.horizon == horizon], [r for r in reports if r.horizon == horizon])
    plot_shapes(axes[0][-1], cells, plt.get_cmap("viridis"))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_law(ax, cells: list[Cell], reports: list[LawReport]) -> None:
    """One horizon: each job's seed-mean losses on the split its law is fitted to, with seed error
    bars (a budget without that evaluation is left out, not drawn as its best trial), its
    baselines as lines, the fit and its band. Horizons get panels of their own: their baselines
    differ (~0.47 at h1, ~0.71 at h5)."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    for i, report in enumerate(reports):
        colour = colours(i % 10)
        split = report.split
        group = [c for c in cells if c.job == report.job and split in c.skill]  # seed means only
        n = np.array([c.best["param_count"] for c in group], dtype=float)
        se = [c.skill[split]["loss_se"] for c in group]
        losses = [c.skill[split]["loss"] for c in group]
        ax.errorbar(n, losses, yerr=se, fmt="o", color=colour, capsize=3, label=f"{report.job} ({split})")
        annotate_differences(ax, group, split, colour)
        for name, style in (("constant", "--"), ("linear", ":"), ("trailing", "-.")):
            levels = [c.skill[split][name] for c in group if name in c.skill[split]]
            if levels:
                ax.axhline(float(np.mean(levels)), color=colour, linestyle=style, label=f"{report.job}: {name}")
        if report.fit is None or report.interval is None:
            continue
        band = report.interval
        f = report.fit
        ax.plot(band.grid, f.predict(band.grid), color=colour, label=f"{report.verdict}: α = {f.alpha:.3f}")
        low, high = np.percentile(band.curves, [2.5, 97.5], axis=0)
        ax.fill_between(band.grid, low, high, color=colour, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N (exact count)")
    ax.set_ylabel(f"{' / '.join(sorted({r.split for r in reports}))} loss (seed mean ± SE)")
    ax.set_title(f"h{cells[0].horizon}: loss vs parameters", fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="x-small")


def annotate_differences(ax, group: list[Cell], split: str, colour) -> None:
    """Each budget's difference from the smallest with its paired SE: the budgets rest on the same
    samples, so their difference is far surer (≈ 0.001) than either error bar (≈ 0.015) says."""
    if not group:
        return
    first = min(group, key=lambda c: c.best["param_count"])
    for c in group:
        if c is first:
            continue
        difference = c.skill[split]["loss"] - first.skill[split]["loss"]
        paired = float(np.std(c.replicates[split] - first.replicates[split], ddof=1))
        ax.annotate(
            f"Δ {difference:+.4f} ± {paired:.4f}",
            (c.best["param_count"], c.skill[split]["loss"]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize="x-small",
            color=colour,
        )


def plot_shapes(ax, cells: list[Cell], colours) -> None:
    budgets = sorted({c.budget for c in cells})
    markers = "osD^v<>"
    horizons = sorted({c.horizon for c in cells})
    for c in cells:
        if not c.trials:
            continue
        colour = colours(budgets.index(c.budget) / max(1, len(budgets) - 1))
        aspect = [d / layers for _, _, d, layers in c.trials]
        marker = markers[horizons.index(c.horizon) % len(markers)]
        label = f"{format_budget(c.budget)} h{c.horizon}"
        ax.scatter(aspect, [loss for _, loss, _, _ in c.trials], color=colour, marker=marker, alpha=0.7, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("d_model / n_layers (wide, shallow →)")
    ax.set_ylabel("validation loss (complete trials)")
    ax.set_title("shape: loss vs d_model / n_layers", fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", title="budget, horizon")
