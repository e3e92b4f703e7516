"""Plots people would rather look at than read; written as PNG files for MLflow and the Dagster UI."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_curve(curve: list[list[float]], path: Path, title: str) -> Path:
    """Training loss against step."""
    steps, losses = zip(*curve, strict=True) if curve else ((), ())
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, linewidth=1.5)
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_domain_curves(curves: dict[str, list[tuple[float, float]]], path: Path, title: str, ylabel: str) -> Path:
    """One line per domain, e.g. validation loss against training step."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for domain, points in sorted(curves.items()):
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker="o", linewidth=1.5, label=domain)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
