"""The figures of evaluation.laws: observed against fitted loss curves, and loss against mixture ratio.

A curve or point the fit did not see (not in ``fit.fitted_on``) is drawn as held out: dashed line, hollow markers.
Saved by evaluation.compare_plots.save_figure (no PNG "Software" entry), so equal inputs give equal bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.compare_plots import plt, save_figure
from evaluation.laws import AnnealingFit, Curve, MixtureFit, MixturePoint, critical_ratio, warmup_end


def _marker_style(color: tuple, held_out: bool) -> dict:
    """Filled markers for points the fit saw, hollow ones for held-out points."""
    return {"color": color, "markerfacecolor": "none" if held_out else color, "markersize": 5, "linestyle": "none"}


def plot_annealing_fit(fit: AnnealingFit, curves: list[Curve], path: Path, title: str = "LR-annealing law") -> Path:
    """Top: each curve's observed loss (markers) and the law's curve (line) past warmup; bottom: observed minus
    predicted at each checkpoint. Held-out curves are dashed with hollow markers, so their errors are predictions."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), dpi=120, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.3]})
    colors = plt.get_cmap("tab10").colors
    for i, curve in enumerate(curves):
        color, held_out = colors[i % len(colors)], curve.name not in fit.fitted_on
        first = max(fit.min_step, warmup_end(curve.lrs) + 1)
        line_steps = list(range(first, len(curve.lrs) + 1))
        predicted = fit.predict(curve.lrs, line_steps)
        label = f"{curve.name} (held out)" if held_out else curve.name
        top.plot(line_steps, [predicted[s] for s in line_steps], color=color, linewidth=1.3,
                 linestyle="--" if held_out else "-", label=label)
        steps = sorted(s for s in curve.observed if s >= first)
        top.plot(steps, [curve.observed[s] for s in steps], marker="o", **_marker_style(color, held_out))
        bottom.plot(steps, [curve.observed[s] - predicted[s] for s in steps], marker="o",
                    **_marker_style(color, held_out))
    bottom.axhline(0.0, color="black", linewidth=0.8)
    top.set(ylabel="validation loss (nats/token)",
            title=f"{title}: L0={fit.L0:.3f} A={fit.A:.3f} alpha={fit.alpha:.3f} C={fit.C:.3g}")
    bottom.set(xlabel="step", ylabel="observed - law")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=7, title="markers: observed, lines: law", title_fontsize=7)
    return save_figure(fig, path)


def plot_mixture_fit(fit: MixtureFit, points: list[MixturePoint], path: Path, cmr: tuple[float, float] | None = None,
                     title: str = "mixture law") -> Path:
    """Target loss (left) and general loss (right) against the target ratio, one colour per token budget: markers
    observed (hollow: held out), lines the law. ``cmr`` = (tokens, tolerance) marks that critical ratio."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    colors = plt.get_cmap("viridis")
    budgets = sorted({p.tokens for p in points})
    low, high = min(p.ratio for p in points), max(p.ratio for p in points)
    line_ratios = np.linspace(low, high, 200)
    for i, tokens in enumerate(budgets):
        color = colors(i / max(len(budgets) - 1, 1))
        lines = [fit.predict(r, tokens) for r in line_ratios]
        for k, ax in enumerate(axes):
            ax.plot(line_ratios, [line[k] for line in lines], color=color, linewidth=1.3, label=f"{tokens:.3g} tokens")
            for p in (p for p in points if p.tokens == tokens):
                loss = p.target_loss if k == 0 else p.general_loss
                ax.plot([p.ratio], [loss], marker="o", **_marker_style(color, p.name not in fit.fitted_on))
    if cmr is not None:
        tokens, tolerance = cmr
        ratio = critical_ratio(fit, tokens, tolerance)
        for ax in axes:
            ax.axvline(ratio, color="crimson", linestyle=":", linewidth=1.2,
                       label=f"critical ratio {ratio:.3f} ({tokens:.3g} tokens, +{tolerance:.1%})")
    axes[0].set(xlabel="target ratio r", ylabel="target-domain loss (nats/token)", title=f"{title}: target")
    axes[1].set(xlabel="target ratio r", ylabel="general loss (nats/token)", title=f"{title}: general")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, title="markers: observed (hollow: held out), lines: law", title_fontsize=7)
    return save_figure(fig, path)
