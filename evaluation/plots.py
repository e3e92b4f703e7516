"""Plots people would rather look at than read; written as PNG files for MLflow and the Dagster UI."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from training.config import TrainConfig  # noqa: E402
from training.schedules import Schedule, lr_factor  # noqa: E402


def plot_curves(curves: dict[str, list[tuple[float, float]]], path: Path, title: str, ylabel: str) -> Path:
    """One line per named curve of (step, value) points, e.g. validation loss per domain against step."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for name, points in sorted(curves.items()):
        steps, values = zip(*points, strict=True) if points else ((), ())
        ax.plot(steps, values, marker="o" if len(points) <= 20 else None, linewidth=1.5, label=name)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_lr_schedule(t: TrainConfig, path: Path) -> Path:
    """A PNG of the learning rate over the run's steps, as the trainer will apply it."""
    s = Schedule.from_train(t)
    steps = range(1, t.steps + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(list(steps), [t.lr * lr_factor(s, step - 1) for step in steps])
    ax.set_xlabel("training step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"LR schedule: {s.name}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
