"""Exact and MinHash near dedup on datatrove, keeping the size of every duplicate cluster.

Exact dedup is datatrove's three-stage ``ExactDedup*`` (hash, find, filter) and near dedup its four-stage MinHash
(signatures, LSH buckets, union-find clusters, filter). Both keep one document per cluster. What datatrove leaves
out, this module adds: every kept document says how many documents it stands for, so a mixture can rebalance by
duplication and quality together (FineWeb2 upsamples by cluster size):

    exact_cluster_size    copies with the same text (stripped), itself included
    minhash_cluster_size  exact-unique documents in its near-duplicate cluster, itself included
    duplicate_count       screened documents it stands for: the exact sizes summed over its near-duplicate cluster

The exact sizes are recorded on the way (``ExactSizes``) and summed per near-duplicate cluster by
``DuplicateCounts`` from MinHash's cluster files, so no extra pass over the data is needed.
"""

from __future__ import annotations

import struct
from collections import defaultdict

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.binaryio import read_tuples_from_file

from curation.config import DedupConfig


def exact_text(doc: Document) -> str:
    """What exact dedup compares: the text without leading and trailing whitespace."""
    return doc.text.strip()


def exact_config() -> ExactDedupConfig:
    # A module function, not a lambda: the config travels to Slurm and Ray workers by pickling. No priority:
    # held-out documents never reach dedup (curation.heldout), so any copy of a duplicate may stay.
    return ExactDedupConfig(content_getter=exact_text)


def minhash_config(cfg: DedupConfig) -> MinhashConfig:
    return MinhashConfig(n_grams=cfg.ngram_size, num_buckets=cfg.num_buckets,
                         hashes_per_bucket=cfg.hashes_per_bucket, seed=cfg.seed)


SIZES_FORMAT = struct.Struct("<II")  # (document index in the task's stream, size): the layout datatrove uses too


class ExactSizes(PipelineStep):
    """After datatrove's exact filter: ``exact_cluster_size`` on each document, sizes above 1 saved per task.

    datatrove writes the number of *extra* copies as ``duplicate_count``; this names it as a cluster size and
    keeps a side file so that ``DuplicateCounts`` can add up the copies behind each near-duplicate cluster.
    """

    type = "🫂 - DEDUP"
    name = "📐 Exact cluster sizes"

    def __init__(self, output_folder: DataFolderLike | None):
        super().__init__()
        self.output_folder = get_datafolder(output_folder) if output_folder else None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        records = bytearray()
        for index, doc in enumerate(data):
            size = int(doc.metadata.pop("duplicate_count", 0)) + 1
            doc.metadata["exact_cluster_size"] = size
            if size > 1:
                records += SIZES_FORMAT.pack(index, size)
                self.stat_update("exact_clusters")
            yield doc
        if self.output_folder is not None:
            with self.output_folder.open(f"{rank:05d}.sizes", "wb") as out:
                out.write(bytes(records))


class DuplicateCounts(PipelineStep):
    """Before MinHash's filter: ``minhash_cluster_size`` and the combined ``duplicate_count`` on every document.

    Reads the MinHash clusters of every task (``<task>.clusters``: document index, cluster id) and the exact sizes
    of every task, so a document's count includes the copies behind near duplicates held by other tasks. It runs
    before the filter so that document indices match MinHash's, and so that removed near duplicates carry their
    counts into the reject set too.
    """

    type = "🫂 - DEDUP"
    name = "🧮 Duplicate counts"

    def __init__(self, clusters_folder: DataFolderLike | None, exact_sizes_folder: DataFolderLike | None):
        super().__init__()
        self.clusters_folder = get_datafolder(clusters_folder) if clusters_folder else None
        self.exact_sizes_folder = get_datafolder(exact_sizes_folder) if exact_sizes_folder else None

    @staticmethod
    def _pairs(folder, suffix: str) -> dict[tuple[int, int], int]:
        """``(task, document index) -> value`` from the binary ``(index, value)`` files of every task."""
        pairs: dict[tuple[int, int], int] = {}
        for name in folder.list_files(glob_pattern=f"*{suffix}"):
            task = int(name.removesuffix(suffix))
            with folder.open(name, "rb") as handle:
                for index, value in read_tuples_from_file(handle, "I", "I", lines_to_buffer=-1):
                    pairs[(task, index)] = value
        return pairs

    def clusters(self) -> tuple[dict[tuple[int, int], int], dict[int, int], dict[int, int]]:
        """Cluster of each clustered document, and per cluster: its members and the screened documents behind it."""
        if self.clusters_folder is None:
            return {}, {}, {}
        members = self._pairs(self.clusters_folder, ".clusters")
        exact = self._pairs(self.exact_sizes_folder, ".sizes") if self.exact_sizes_folder else {}
        sizes: dict[int, int] = defaultdict(int)
        totals: dict[int, int] = defaultdict(int)
        for member, cluster in members.items():
            sizes[cluster] += 1
            totals[cluster] += exact.get(member, 1)
        return members, sizes, totals

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        members, sizes, totals = self.clusters()
        for index, doc in enumerate(data):
            meta = doc.metadata
            exact = meta.setdefault("exact_cluster_size", 1)
            cluster = members.get((rank, index))
            meta["minhash_cluster_size"] = sizes[cluster] if cluster is not None else 1
            meta["duplicate_count"] = totals[cluster] if cluster is not None else exact
            self.stat_update("clustered" if cluster is not None else "unclustered")
            yield doc
