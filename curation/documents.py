"""Documents on disk: the one record format every curation stage reads and writes.

A document is one JSON line, in the flat layout that datatrove's JsonlReader understands (``text`` and ``id``;
every other key becomes ``metadata``):

    {"id": "...", "text": "...", "domain": "python", "source": "stdlib/json/decoder.py", "bytes": 12345}

``source`` is always relative to the root it was read from, never an absolute machine path.
Bad input is never dropped silently: it goes to a quarantine file with the reason, and is counted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DOCUMENTS_FILE = "documents.jsonl.gz"
QUARANTINE_FILE = "quarantine.jsonl.gz"


def document_id(source: str, text: str) -> str:
    """Stable id from where a document came from and what it says."""
    return hashlib.sha1(f"{source}\0{text}".encode()).hexdigest()[:16]


def make_document(text: str, domain: str, source: str) -> dict:
    return {
        "id": document_id(source, text),
        "text": text,
        "domain": domain,
        "source": source,
        "bytes": len(text.encode("utf-8")),
    }


@dataclass
class Quarantine:
    """Collects rejected input with its reason; counts per reason."""

    records: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, reason: str, where: str, raw: str = "") -> None:
        self.counts[reason] += 1
        # Keep a bounded prefix of the raw input: enough to debug, never a 50 MB line in memory twice.
        self.records.append({"reason": reason, "where": where, "raw": raw[:2000]})


def write_documents(path: Path, documents: Iterable[dict]) -> int:
    """Gzipped JSON lines with a fixed header time: the same documents always give the same bytes."""
    count = 0
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
        for doc in documents:
            zipped.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
            count += 1
    return count


def read_documents(path: Path) -> Iterator[dict]:
    """Read documents written by ``write_documents`` or by datatrove's JsonlWriter (metadata nested or flat)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            record.update(record.pop("metadata", {}) or {})
            yield record


def iter_document_files(folder: Path) -> list[Path]:
    return sorted([*folder.rglob("*.jsonl.gz"), *folder.rglob("*.jsonl")])
