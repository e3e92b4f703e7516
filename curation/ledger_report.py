"""The mixture ledger for people: a markdown table and a plot of target against realized share per phase."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def ledger_sections(ledger: dict) -> dict[str, dict]:
    return {**ledger["phases"], **({"replay": ledger["replay"]} if "replay" in ledger else {})}


def ledger_markdown(ledger: dict) -> str:
    rows = [
        f"| {phase} | {d} | {row['weight']:.3f} | {row['target_tokens']:,} | {row['realized_tokens']:,} |"
        for phase, section in ledger_sections(ledger).items() for d, row in section["domains"].items()
    ]
    header = "| phase | domain | weight | target tokens | realized tokens |\n|---|---|---:|---:|---:|\n"
    return header + "\n".join(rows)


def ledger_plot(ledger: dict, path: Path) -> Path:
    """Target against realized share of each domain, one panel per phase (and replay)."""
    sections = ledger_sections(ledger)
    fig, axes = plt.subplots(1, len(sections), figsize=(3.2 * len(sections) + 1, 3.5), dpi=120, squeeze=False,
                             sharey=True)
    for ax, (name, section) in zip(axes[0], sections.items(), strict=True):
        domains = list(section["domains"])
        x = np.arange(len(domains))
        ax.bar(x - 0.2, [section["domains"][d]["weight"] for d in domains], 0.4, label="target")
        ax.bar(x + 0.2, [section["domains"][d]["realized_share"] for d in domains], 0.4, label="realized")
        ax.set_xticks(x, domains, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{name} ({section['tokens']:,} tokens)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("share of tokens")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
