"""Figures of a preset's finding: every effect with its seeds, and the early curves behind a stability gap."""

from __future__ import annotations

from pathlib import Path

from evaluation.compare import token_weighted_loss
from evaluation.compare_plots import plt, save_figure
from evaluation.findings import Effect, Seeds, domains_label, domains_of

VERDICT_COLORS = {"held": "tab:green", "within spread": "tab:orange", "no difference": "tab:gray"}


def plot_effects(effects: list[Effect], path: Path, title: str) -> Path:
    """Each effect's paired differences per seed (dots) and their mean (bar); left of zero: arm below against."""
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(effects) + 1.6))
    for row, e in enumerate(reversed(effects)):
        diffs = [e.values[s] - e.against_values[s] for s in sorted(e.values) if s in e.against_values]
        color = VERDICT_COLORS.get(e.verdict, "tab:red")
        ax.barh(row, e.mean, color=color, alpha=0.35)
        ax.scatter(diffs, [row] * len(diffs), color=color, zorder=3, s=18)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(effects)), [f"{e.name}\n(published: {e.expected})" for e in reversed(effects)],
                  fontsize=7)
    ax.set_xlabel("paired difference of final validation loss (arm - against), per seed; bar: mean")
    ax.set_title(f"{title}: effects (green held, orange within seed spread, grey no difference, red not held)",
                 fontsize=9)
    return save_figure(fig, path)


def plot_stability_gap(spec: dict, arms: dict[str, Seeds], path: Path) -> Path:
    """The old domains' loss over a child's first steps, per arm and seed: the dip and recovery, or its absence."""
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.get_cmap("tab10").colors
    for index, arm in enumerate(spec["arms"]):
        for seed, record in sorted(arms[arm].items()):
            points = sorted((step, token_weighted_loss(results, domains_of(spec["domains"], record)))
                            for step, results in record.val_curve.items())
            start = points[0][0]
            early = [(s, loss) for s, loss in points if s <= start + spec.get("within_steps", 20)]
            ax.plot([s - start for s, _ in early], [loss for _, loss in early], marker="o", markersize=3,
                    color=colors[index % len(colors)], linestyle="-" if seed == min(arms[arm]) else "--",
                    label=f"{arm} seed={seed}")
    ax.set_xlabel("steps after the start")
    ax.set_ylabel(f"validation loss, {domains_label(spec['domains'])}")
    ax.set_title("Stability gap: the old domains' loss in the first steps of continual pretraining", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
