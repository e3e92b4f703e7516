"""Plan-time check that the mixture's weights name domains that have documents, before any stage runs.

What is known about the domains grows along the lineage, and the check uses the best of it:

- ``filtered`` materialized: the documents the filter kept per domain (a domain can lose all of them);
- ``corpus`` materialized: its documents per domain (``Manifest.stats["domains"]``);
- neither, ``python_env``: the domains ``corpus.domains`` allows documents for (positive caps);
- neither, ``jsonl``/``parquet``: the source itself when it is small (read once per process, by source
  signature); a larger one is checked when ``corpus`` is materialized, since every asset plans before it builds:
  ``filtered`` then refuses to run. A bounded sample of a large source cannot prove a domain absent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

import fsspec

from curation.config import CorpusConfig
from curation.corpus import read_corpus, source_signature
from curation.documents import Quarantine
from curation.weights import check_weight_domains, weight_settings
from orchestration.config import ExperimentConfig
from orchestration.store import Manifest, stable_json

# A jsonl/parquet source up to this many bytes (as stored, compressed or not) is read at plan time: well under
# a second, once per process however many arms a sweep plans.
SCAN_LIMIT_BYTES = 8 << 20
_scanned: dict[str, dict[str, int]] = {}


def small_source_domains(cfg: CorpusConfig) -> dict[str, int] | None:
    """Documents per domain of a jsonl/parquet source of at most SCAN_LIMIT_BYTES, read as ``corpus`` reads it;
    None for a larger source."""
    files = fsspec.open_files(cfg.paths, mode="rb", **cfg.storage_options)
    if sum(file.fs.size(file.path) for file in files) > SCAN_LIMIT_BYTES:
        return None
    key = source_signature(cfg) + stable_json(asdict(cfg))
    if key not in _scanned:
        _scanned[key] = dict(Counter(doc["domain"] for doc in read_corpus(cfg, Quarantine(), Counter())))
    return _scanned[key]


def known_domains(cfg: ExperimentConfig, corpus: Manifest | None,
                  filtered: Manifest | None) -> tuple[dict[str, int], str] | None:
    """Documents per domain as far as known before the mixture is built, and what they count; None: unknown yet."""
    if filtered is not None:
        return filtered.stats["kept_by_domain"], "documents kept by the filter"
    if corpus is not None:
        return {domain: stats["documents"] for domain, stats in corpus.stats["domains"].items()}, "documents"
    if cfg.corpus.source == "python_env":
        caps = {domain: cap.max_docs if cap.max_bytes > 0 else 0 for domain, cap in cfg.corpus.domains.items()}
        return caps, "documents allowed by corpus.domains"
    domains = small_source_domains(cfg.corpus)
    return None if domains is None else (domains, "documents")


def check_mixture_domains(cfg: ExperimentConfig, corpus: Manifest | None, filtered: Manifest | None = None) -> None:
    """Raise ValueError (naming the domains, those that exist, and the fix) when a weight names a domain without
    documents. ``corpus``/``filtered``: the stages' outputs for this config, None while not materialized."""
    if not any(weight_settings(cfg.mixture).values()):  # empty weights: every domain by its token count
        return
    known = known_domains(cfg, corpus, filtered)
    if known is not None:
        check_weight_domains(cfg.mixture, *known)
