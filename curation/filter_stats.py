"""Statistics of the ``filtered`` stage: what each rule removed per domain, document lengths kept against removed,
and the distribution of duplicate-cluster sizes; as JSON and as PNG plots for Dagster and MLflow.

Lengths are binned in powers of two of UTF-8 bytes (fixed edges, so runs compare bin by bin).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

from curation.documents import iter_document_files, read_documents

REPORT_DIR = "report"
STATS_FILE = "filter_stats.json"
LENGTH_EDGES = [2**k for k in range(4, 25)]  # 16 B .. 16 MiB; the last bin also holds anything longer
CLUSTER_FIELDS = ("duplicate_count", "exact_cluster_size", "minhash_cluster_size")


def count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def length_bin(n_bytes: int) -> int:
    return min(max(n_bytes.bit_length() - 4, 0), len(LENGTH_EDGES) - 1)


def _records(folder: Path):
    for path in iter_document_files(folder):
        yield from read_documents(path)


def _size(record: dict) -> int:
    return record.get("bytes") or len(record["text"].encode("utf-8"))


def collect_stats(out_dir: Path, removed_by_reason: dict[str, int], steps: list[str]) -> dict:
    """Read the kept and rejected sets once; write ``report/filter_stats.json``; return the summary statistics."""
    lengths: dict[str, dict[str, list[int]]] = {}
    clusters = {name: Counter() for name in CLUSTER_FIELDS}
    kept_by_domain, rejected_by_rule, removed_by_domain = Counter(), Counter(), {}

    def histogram(domain: str, side: str) -> list[int]:
        per_domain = lengths.setdefault(domain, {"kept": [0] * len(LENGTH_EDGES), "removed": [0] * len(LENGTH_EDGES)})
        return per_domain[side]

    for record in _records(out_dir / "kept"):
        domain = record.get("domain", "unknown")
        kept_by_domain[domain] += 1
        histogram(domain, "kept")[length_bin(_size(record))] += 1
        for name in CLUSTER_FIELDS:
            clusters[name][record.get(name, 1)] += 1
    for record in _records(out_dir / "rejected"):
        domain, rule = record.get("domain", "unknown"), record.get("filter_rule", "unknown")
        rejected_by_rule[rule] += 1
        removed_by_domain.setdefault(domain, Counter())[rule] += 1
        histogram(domain, "removed")[length_bin(_size(record))] += 1
    summary = {
        "kept": sum(kept_by_domain.values()),
        "kept_by_domain": dict(sorted(kept_by_domain.items())),
        "rejected_by_rule": dict(sorted(rejected_by_rule.items())),
        "removed_by_reason": dict(sorted(removed_by_reason.items())),
        "removed_by_domain": {d: dict(sorted(c.items())) for d, c in sorted(removed_by_domain.items())},
        # Kept documents per cluster size: how much a mixture could rebalance by duplication.
        "cluster_sizes": {name: {str(k): v for k, v in sorted(c.items())} for name, c in clusters.items()},
        "steps": steps,
    }
    report = {**summary, "length_bin_edges_bytes": LENGTH_EDGES, "length_histograms": dict(sorted(lengths.items()))}
    (out_dir / REPORT_DIR).mkdir(exist_ok=True)
    (out_dir / REPORT_DIR / STATS_FILE).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return summary


def _plot_lengths(histograms: dict[str, dict[str, list[int]]], path: Path) -> None:
    import matplotlib.pyplot as plt

    columns = min(3, max(len(histograms), 1))
    rows = -(-max(len(histograms), 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), dpi=120, squeeze=False)
    for ax, (domain, sides) in zip(axes.flat, sorted(histograms.items()), strict=False):
        for side, color in (("kept", "tab:blue"), ("removed", "tab:red")):
            ax.stairs(sides[side], [*LENGTH_EDGES, LENGTH_EDGES[-1] * 2], label=side, color=color, linewidth=1.5)
        ax.set(xscale="log", title=domain, xlabel="UTF-8 bytes")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(histograms):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("documents")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Document length per domain: kept vs removed", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_cluster_sizes(cluster_sizes: dict[str, dict[str, int]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for name, counts in cluster_sizes.items():
        sizes = sorted(counts, key=int)
        ax.plot([int(s) for s in sizes], [counts[s] for s in sizes], marker="o", linewidth=1.5, label=name)
    ax.set(xscale="log", yscale="log", xlabel="cluster size (documents)", ylabel="kept documents",
           title="Duplicate-cluster sizes of kept documents")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_filter_report(out_dir: Path) -> list[str]:
    """PNG plots of ``report/filter_stats.json``: length histograms per domain, duplicate-cluster sizes.

    Returns the report's files relative to ``out_dir`` (JSON and plots), for ``StageResult.artifacts``.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    report = json.loads((out_dir / REPORT_DIR / STATS_FILE).read_text())
    _plot_lengths(report["length_histograms"], out_dir / REPORT_DIR / "lengths.png")
    _plot_cluster_sizes(report["cluster_sizes"], out_dir / REPORT_DIR / "cluster_sizes.png")
    return [f"{REPORT_DIR}/{STATS_FILE}", f"{REPORT_DIR}/lengths.png", f"{REPORT_DIR}/cluster_sizes.png"]
