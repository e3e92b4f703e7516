"""Dedup-aware rebalancing ("rehydration", FineWeb2): repeat each training document by its duplicate-cluster size,
as far as documents of that cluster size pass the quality filters.

Dedup keeps one document per cluster. FineWeb2 found that putting some of the copies back helps, but not for every
cluster size: it measures how often documents of each cluster size were removed by the quality filters, and
upsamples the sizes that pass more often (capped; a very large cluster is often spam). Here, per domain and per
cluster-size bucket (``RehydrationConfig.buckets``):

    pass rate   share of the bucket's documents that passed the quality filters
    lift        (bucket pass rate - domain pass rate) / (1 - domain pass rate), clipped to [0, 1]: 0 at or below
                the domain's average, 1 when every document of the bucket passed
    repeats     1 + round((min(bucket edge, max_repeats) - 1) * lift)

so singletons appear once, a bucket that passes no more often than its domain once, and a bucket that always passes
min(size, cap) times (FineWeb2's table: 1, 2, 3, 5, 8). A bucket with fewer than ``min_bucket_documents`` documents
repeats once, and ``fixed_repeats`` pins a bucket. When a domain's filters removed nothing, nothing tells its
buckets apart and cluster size alone decides (lift 1).

Which cluster size. In this curation the filters run before dedup (``curation.filters``), so a document a quality
rule removed was never deduplicated and carries no cluster size; ``minhash_cluster_size`` and ``duplicate_count``
exist only for documents that passed. Bucketing the passes by near-duplicate size and the failures by something
smaller would make large clusters look clean. So both sides are measured the same way: the **exact cluster size**,
the number of documents with the same text (stripped, as exact dedup compares) among everything the filtered stage
saw, i.e. its kept set and every reject folder. Each corpus document (held-out ones aside) is in exactly one of
them, so the exact duplicates removed by dedup are counted as the copies they are. A quality rule sees only the
text and the domain, so copies within a domain share their verdict. Near-duplicate clusters do not raise a
document's repeats: rejected documents have no MinHash cluster to compare against.

Repetition changes which documents fill a domain's share, not the share: the mixture still interleaves by weight
and its token counts for natural or temperature weights come from the documents before repetition.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from curation.config import RehydrationConfig
from curation.documents import iter_document_files, read_documents

# Reject folders of the filtered stage that are not a quality verdict: their documents passed the quality rules.
NOT_QUALITY = ("exact_duplicate", "near_duplicate", "decontaminated")


@dataclass
class Screened:
    """One document the filtered stage saw: its domain, whether it passed the quality rules, its text's digest."""

    domain: str
    passed: bool
    digest: bytes
    kept: bool


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.strip().encode("utf-8"), digest_size=16).digest()


def read_screened(filtered_dir: Path) -> list[Screened]:
    """Every kept and rejected document, kept ones first in the order the mixture reads them."""
    screened = [Screened(doc["domain"], True, text_digest(doc["text"]), True)
                for path in iter_document_files(filtered_dir / "kept") for doc in read_documents(path)]
    rejected = filtered_dir / "rejected"
    for folder in sorted(p for p in rejected.iterdir() if p.is_dir()) if rejected.is_dir() else []:
        passed = folder.name in NOT_QUALITY
        screened += [Screened(doc["domain"], passed, text_digest(doc["text"]), False)
                     for path in iter_document_files(folder) for doc in read_documents(path)]
    return screened


def bucket_label(edges: list[int], index: int) -> str:
    low = edges[index]
    if index == len(edges) - 1:
        return f"{low}+"
    high = edges[index + 1] - 1
    return str(low) if high == low else f"{low}-{high}"


def bucket_index(edges: list[int], size: int) -> int:
    return max(i for i, edge in enumerate(edges) if edge <= size)


def repeat_count(cfg: RehydrationConfig, edge: int, documents: int, passed: int, domain_rate: float) -> int:
    """A bucket's repeats from its pass rate against its domain's (module docstring)."""
    if edge in cfg.fixed_repeats:
        return cfg.fixed_repeats[edge]
    if documents < cfg.min_bucket_documents:
        return 1
    rate = passed / documents
    lift = 1.0 if domain_rate >= 1 else min(max((rate - domain_rate) / (1 - domain_rate), 0.0), 1.0)
    return 1 + int((min(edge, cfg.max_repeats) - 1) * lift + 0.5)


def bucket_table(cfg: RehydrationConfig, screened: list[Screened]) -> tuple[dict[str, list[dict]], list[int]]:
    """Per domain: each bucket's documents, passes, pass rate and repeats; and each kept document's bucket index."""
    edges = list(cfg.buckets)
    copies = Counter(doc.digest for doc in screened)
    buckets = [bucket_index(edges, copies[doc.digest]) for doc in screened]
    documents, passed, kept = Counter(), Counter(), Counter()
    for doc, bucket in zip(screened, buckets, strict=True):
        documents[doc.domain, bucket] += 1
        passed[doc.domain, bucket] += doc.passed
        kept[doc.domain, bucket] += doc.kept
    table = {}
    for domain in sorted({doc.domain for doc in screened}):
        total = sum(documents[domain, b] for b in range(len(edges)))
        domain_rate = sum(passed[domain, b] for b in range(len(edges))) / total
        table[domain] = [
            {"bucket": bucket_label(edges, b), "documents": documents[domain, b], "passed": passed[domain, b],
             "kept": kept[domain, b],
             "pass_rate": round(passed[domain, b] / documents[domain, b], 4) if documents[domain, b] else None,
             "domain_pass_rate": round(domain_rate, 4),
             "repeats": repeat_count(cfg, edges[b], documents[domain, b], passed[domain, b], domain_rate)}
            for b in range(len(edges))
        ]
    kept_buckets = [bucket for doc, bucket in zip(screened, buckets, strict=True) if doc.kept]
    return table, kept_buckets


def rehydration_repeats(cfg: RehydrationConfig, filtered_dir: Path) -> tuple[dict[str, list[int]], dict]:
    """Repeats of every training (kept) document per domain, in the order the mixture reads them, and the stats:
    the bucket table and how many documents got which repeat count."""
    screened = read_screened(filtered_dir)
    table, kept_buckets = bucket_table(cfg, screened)
    repeats: dict[str, list[int]] = {}
    for doc, bucket in zip((doc for doc in screened if doc.kept), kept_buckets, strict=True):
        repeats.setdefault(doc.domain, []).append(table[doc.domain][bucket]["repeats"])
    documents_by_repeats = {d: {str(k): n for k, n in sorted(Counter(r).items())} for d, r in repeats.items()}
    stats = {"cluster_size": "exact copies among the filtered stage's kept and rejected documents",
             "buckets": table, "documents_by_repeats": documents_by_repeats,
             "documents": {d: len(r) for d, r in repeats.items()},
             "rehydrated_documents": {d: sum(r) for d, r in repeats.items()}}
    return repeats, stats
