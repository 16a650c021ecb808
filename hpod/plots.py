"""The report's figure: loss against parameters with the fitted law and its band, and loss
against shape per budget (which shape wins at each budget is the study's second question)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpod.budget import format_budget
from hpod.report import Cell, LawReport

FIGSIZE_IN, DPI = (13.0, 5.5), 100  # 1300 × 550 pixels


def plot_report(cells: list[Cell], reports: list[LawReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a workstation's service account
    import matplotlib.pyplot as plt

    fig, (laws_ax, shape_ax) = plt.subplots(1, 2, figsize=FIGSIZE_IN, dpi=DPI)
    plot_laws(laws_ax, cells, reports, plt.get_cmap("tab10"))
    plot_shapes(shape_ax, cells, plt.get_cmap("viridis"))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_laws(ax, cells: list[Cell], reports: list[LawReport], colours) -> None:
    from matplotlib.ticker import ScalarFormatter

    for i, report in enumerate(reports):
        colour = colours(i % 10)
        group = [c for c in cells if c.job == report.job and c.horizon == report.horizon and c.best is not None]
        n = [c.best["param_count"] for c in group]
        label = f"{report.job} h{report.horizon}"
        ax.scatter(n, [c.best["val_loss"] for c in group], color=colour, zorder=3, label=f"{label}: best per budget")
        if report.fit is None:
            continue
        grid = report.interval.grid if report.interval else np.geomspace(min(n) / 2, max(n) * 2, 100)
        f = report.fit
        ax.plot(grid, f.predict(grid), color=colour, label=f"{label}: {f.E:.3f} + {f.A:.3g}·N^-{f.alpha:.3f}")
        if report.interval is not None:
            low, high = np.percentile(report.interval.curves, [2.5, 97.5], axis=0)
            ax.fill_between(grid, low, high, color=colour, alpha=0.2, label=f"{label}: 95% bootstrap band")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("parameters N (exact count of the best trial)")
    ax.set_ylabel("best validation loss")
    ax.set_title("Scaling: best validation loss against parameters")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


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
    ax.set_xlabel("shape: d_model / n_layers (wide and shallow to the right)")
    ax.set_ylabel("validation loss (complete trials)")
    ax.set_title("Shape: validation loss against d_model / n_layers, per budget")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", title="budget, horizon")
