"""Held-out documents: chosen per domain from the corpus before any filter decides, so no filter can take them.

Each domain's corpus documents are ranked by a hash of their id (the same document ranks the same in every
experiment) and taken in that order until the domain holds ``fraction`` of its documents AND at least
``min_documents`` documents AND about ``min_tokens`` tokens, but never more than ``max_fraction`` of them. Tokens are
estimated from UTF-8 bytes here (the tokenizer is trained later, on what the filters keep); the ``mixed`` stage
checks the real counts (``token_shortfalls``).

The ``filtered`` stage writes the held-out documents to ``heldout/`` and passes the rest to the filters; its
decontamination drops every training document that duplicates held-out text. A domain that cannot meet a minimum
is named in a warning, never dropped in silence.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from curation.config import HeldoutConfig
from curation.documents import DOCUMENTS_FILE, read_documents, write_documents

HELDOUT_DIR = "heldout"


def heldout_rank(doc_id: str) -> int:
    """Where a document stands in its domain's held-out order: a hash of its id, stable across stages and runs."""
    return int(hashlib.sha256(f"split:{doc_id}".encode()).hexdigest()[:8], 16)


@dataclass
class DomainHeldout:
    ids: list[str]  # in held-out order
    documents: int  # corpus documents of the domain
    estimated_tokens: int  # of the held-out documents
    bytes: int  # of the held-out documents


def check_config(cfg: HeldoutConfig) -> None:
    if not 0 <= cfg.fraction <= cfg.max_fraction <= 1:
        raise ValueError(f"filter.heldout needs 0 <= fraction <= max_fraction <= 1, got fraction={cfg.fraction}, "
                         f"max_fraction={cfg.max_fraction}")
    if cfg.min_documents < 0 or cfg.min_tokens < 0 or cfg.bytes_per_token <= 0:
        raise ValueError("filter.heldout.min_documents and min_tokens must be >= 0, bytes_per_token > 0")


def choose_heldout(documents: Iterable[tuple[str, str, int]], cfg: HeldoutConfig) -> dict[str, DomainHeldout]:
    """Held-out documents per domain, from (id, domain, bytes) of every corpus document."""
    check_config(cfg)
    by_domain: dict[str, list[tuple[int, str, int]]] = {}
    for doc_id, domain, n_bytes in documents:
        by_domain.setdefault(domain, []).append((heldout_rank(doc_id), doc_id, n_bytes))
    chosen = {}
    for domain, ranked in sorted(by_domain.items()):
        ranked.sort()
        wanted = max(math.ceil(cfg.fraction * len(ranked)), cfg.min_documents)
        cap = math.floor(cfg.max_fraction * len(ranked))
        ids, n_bytes = [], 0
        for _, doc_id, size in ranked:
            enough = len(ids) >= wanted and n_bytes / cfg.bytes_per_token >= cfg.min_tokens
            if enough or len(ids) >= cap:
                break
            ids.append(doc_id)
            n_bytes += size
        chosen[domain] = DomainHeldout(ids, len(ranked), round(n_bytes / cfg.bytes_per_token), n_bytes)
    return chosen


def shortfall(domain: str, documents: int, tokens: int, cfg: HeldoutConfig, what: str = "tokens") -> str | None:
    """A warning naming the domain when its held-out documents or tokens fall below the minimums; else None."""
    if documents >= cfg.min_documents and tokens >= cfg.min_tokens:
        return None
    if documents == 0:
        return f"held-out data: domain '{domain}' has NO held-out documents: it is missing from every eval table"
    return (f"held-out data: domain '{domain}' holds {documents} documents and {tokens:,} {what}, below the "
            f"minimum of {cfg.min_documents} documents and {cfg.min_tokens:,} tokens (filter.heldout)")


def selection_stats(chosen: dict[str, DomainHeldout], cfg: HeldoutConfig) -> dict:
    """What ``filtered`` reports: per domain, held-out documents, bytes and estimated tokens; and the warnings."""
    per_domain = {d: {"documents": len(h.ids), "corpus_documents": h.documents, "bytes": h.bytes,
                      "estimated_tokens": h.estimated_tokens} for d, h in chosen.items()}
    warnings = [f"{w}: it has {h.documents} corpus documents and filter.heldout.max_fraction={cfg.max_fraction}"
                for d, h in chosen.items()
                if (w := shortfall(d, len(h.ids), h.estimated_tokens, cfg, "estimated tokens")) is not None]
    return {"held_out_by_domain": per_domain, "held_out_warnings": warnings}


def token_shortfalls(domains: dict[str, dict], trained: list[str], cfg: HeldoutConfig) -> list[str]:
    """Warnings for the ``mixed`` stage: every training domain's real held-out documents and tokens against the
    minimums (``domains`` as in mixture.json: domain -> split -> documents, tokens, bytes)."""
    warnings = []
    for domain in trained:
        val = domains.get(domain, {}).get("val", {"documents": 0, "tokens": 0})
        if (warning := shortfall(domain, val["documents"], val["tokens"], cfg)) is not None:
            warnings.append(f"{warning} (a training domain)")
    return warnings


def write_heldout(corpus_files: list[Path], cfg: HeldoutConfig, out_dir: Path) -> dict[str, DomainHeldout]:
    """Choose the held-out documents of the corpus and write them, per domain in held-out order, to ``out_dir``."""
    chosen = choose_heldout(((doc["id"], doc["domain"], doc["bytes"]) for path in corpus_files
                             for doc in read_documents(path)), cfg)
    position = {doc_id: (domain, i) for domain, held in chosen.items() for i, doc_id in enumerate(held.ids)}
    documents = [doc for path in corpus_files for doc in read_documents(path) if doc["id"] in position]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_documents(out_dir / DOCUMENTS_FILE, sorted(documents, key=lambda doc: position[doc["id"]]))
    return chosen
