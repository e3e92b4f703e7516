"""The comparison report's figures, drawn from plain numbers (evaluation/compare.py computes them).

Every figure is saved without the PNG "Software" entry (matplotlib writes no date into a PNG otherwise), so equal
inputs give equal bytes and a rebuilt report does not look changed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

Points = list[tuple[float, float]]
LINESTYLES = ["-", "--", ":", "-."]


def arm_styles(groups: list[list[str]]) -> dict[str, dict]:
    """One colour per group of arms (a setting), one line style per arm (a seed) within its group."""
    colors = plt.get_cmap("tab10").colors
    return {
        name: {"color": colors[g % len(colors)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}
        for g, names in enumerate(groups) for i, name in enumerate(names)
    }


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save and close: no PNG "Software" entry, so equal inputs give equal bytes (every lab figure goes here)."""
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def _legend(ax: plt.Axes, entries: int) -> None:
    if entries > 1:
        ax.legend(fontsize=7, ncol=2 if entries > 8 else 1)


def plot_overlaid(curves: dict[str, Points], styles: dict[str, dict], path: Path, title: str, xlabel: str,
                  ylabel: str) -> Path:
    """One line per arm, in the caller's order, e.g. training loss against tokens."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name, points in curves.items():
        xs, ys = zip(*points, strict=True) if points else ((), ())
        ax.plot(xs, ys, marker="o" if len(points) <= 20 else None, markersize=3, linewidth=1.3, label=name,
                **styles[name])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    _legend(ax, len(curves))
    return save_figure(fig, path)


def plot_final_by_setting(panels: dict[str, dict[str, list[tuple[float, float, float]]]], path: Path, title: str,
                          xlabel: str, ticks: list[str] | None, spread: str) -> Path:
    """Per metric a panel, per domain a series of (x, mean, spread) points with the spread as error bars.

    With ``ticks`` the x values are positions 0..n-1 of categorical settings (points, no joining lines);
    without, x is the numeric swept parameter and the points of a domain are joined.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=120, squeeze=False)
    for ax, (metric, series) in zip(axes[0], panels.items(), strict=True):
        for offset, (domain, points) in enumerate(series.items()):
            xs, means, errors = zip(*points, strict=True) if points else ((), (), ())
            if ticks is not None:  # side by side at each setting, so error bars do not hide each other
                xs = [x + 0.08 * (offset - (len(series) - 1) / 2) for x in xs]
            ax.errorbar(xs, means, yerr=errors, fmt="o" if ticks is not None else "o-", capsize=3, markersize=4,
                        linewidth=1.2, label=domain)
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), ticks, rotation=20 if len(ticks) > 3 else 0, ha="right"
                          if len(ticks) > 3 else "center", fontsize=7)
        ax.set(xlabel=xlabel, ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        _legend(ax, len(series))
    fig.suptitle(f"{title}\nerror bars: {spread}", fontsize=9)
    return save_figure(fig, path)


def plot_tokens_to_target(tokens: dict[str, float | None], ratios: dict[str, float | None],
                          styles: dict[str, dict], baseline_tokens: float | None, path: Path, title: str) -> Path:
    """A horizontal bar per arm: tokens to the target, its ratio to the baseline's, "not reached" where never."""
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.35 * len(tokens)), dpi=120)
    names = list(tokens)
    for row, name in enumerate(names):
        if tokens[name] is None:
            ax.text(0, row, " not reached", va="center", fontsize=8, color="dimgray")
            continue
        ax.barh(row, tokens[name], color=styles[name]["color"], height=0.6)
        ratio = ratios.get(name)
        ax.text(tokens[name], row, f" {ratio:.2f}x" if ratio is not None else "", va="center", fontsize=8)
    if baseline_tokens is not None:
        ax.axvline(baseline_tokens, color="black", linestyle="--", linewidth=1, label="baseline")
        ax.legend(fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()  # the first arm on top, as in the table
    ax.margins(x=0.15)  # room for the ratio labels after the longest bar
    ax.set(xlabel="tokens to target", title=title)
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)
