"""The figures of evaluation.forgetting: loss on the parent's domains over a child run, and the transfer heatmap.

Saved by evaluation.compare_plots.save_figure (no PNG "Software" entry), so equal inputs give equal bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from evaluation.compare_plots import plt, save_figure
from evaluation.forgetting import ForgettingTable, TransferRow, matrix_domains


def plot_forgetting(table: ForgettingTable, path: Path, title: str) -> Path:
    """Loss on each parent domain against the steps since the parent's checkpoint, the parent's level dashed.

    The step axis is logarithmic past the first step, so that dense early checkpoints show the stability gap.
    """
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    colors = plt.get_cmap("tab10").colors
    for i, (domain, f) in enumerate(table.domains.items()):
        color = colors[i % len(colors)]
        xs = [0] + [step - table.start_step for step in table.steps]
        ys = [f.start_loss] + [f.loss_by_step[step] for step in table.steps]
        ax.plot(xs, ys, color=color, marker="o", markersize=3, linewidth=1.3, label=domain)
        ax.axhline(f.start_loss, color=color, linestyle="--", linewidth=0.9, alpha=0.7)
        if f.max_rise > 0:
            ax.plot([f.max_rise_step - table.start_step], [f.loss_by_step[f.max_rise_step]], marker="^",
                    color=color, markersize=7)
    ax.set_xscale("symlog", linthresh=1)
    ax.set(xlabel=f"steps after the parent's checkpoint (child step {table.start_step} + x)",
           ylabel="validation loss (nats/token)", title=title)
    ax.grid(alpha=0.3)
    if table.domains:
        ax.legend(fontsize=7, title="dashed: parent's loss, ▲: peak", title_fontsize=7)
    return save_figure(fig, path)


def plot_transfer(rows: list[TransferRow], path: Path, title: str) -> Path:
    """A heatmap of loss change per stage (rows) and domain (columns): red rose (forgot), blue fell (learned).

    The stage's own training domains are boxed; a missing cell (no held-out loss) is grey.
    """
    domains = matrix_domains(rows)
    values = np.ma.masked_invalid([[row.change.get(d, math.nan) for d in domains] for row in rows])
    scale = float(np.abs(values).max() or 1.0) if values.count() else 1.0  # symmetric: zero is white
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("0.85")
    fig, ax = plt.subplots(figsize=(1.2 * len(domains) + 2.5, 0.6 * len(rows) + 1.8), dpi=120)
    image = ax.imshow(values, cmap=cmap, vmin=-scale, vmax=scale, aspect="auto")
    for r, row in enumerate(rows):
        for c, d in enumerate(domains):
            if d in row.change:
                dark = abs(row.change[d]) > 0.6 * scale  # white text on the saturated ends of the colour map
                ax.text(c, r, f"{row.change[d]:+.2f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
            if d in row.trained:
                ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, linewidth=2, edgecolor="black"))
    ax.set_xticks(range(len(domains)), domains, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [row.stage for row in rows])
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="loss change (end - start)")
    return save_figure(fig, path)
