"""Plots people would rather look at than read; written as PNG files for MLflow and the Dagster UI."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_curve(curve: list[list[float]], path: Path, title: str) -> Path:
    """Training loss against step."""
    steps, losses = zip(*curve) if curve else ((), ())
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, linewidth=1.5)
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
