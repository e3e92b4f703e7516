"""Hostile input through the corpus and filtered library code: quarantined and counted, the rest processed."""

from __future__ import annotations

import json
from pathlib import Path

from curation.config import CorpusConfig, FilterConfig
from curation.corpus import build_corpus
from curation.documents import DOCUMENTS_FILE, QUARANTINE_FILE, iter_document_files, read_documents
from curation.filters import build_filtered

PROSE = (
    "The river runs past the old mill, where the miller keeps his sacks of grain in a dry loft above the wheel. "
    "In the evening the children come to watch the water turn the wheel, and the miller tells them about the "
    "floods of the past, when the river rose over the banks and the whole village had to carry the grain uphill."
)


def test_hostile_jsonl_is_quarantined_and_the_rest_goes_through(tmp_path: Path) -> None:
    huge = b'{"text": "' + b"a" * (50 * 1024 * 1024) + b'"}\n'  # one 50 MB line
    lines = [
        json.dumps({"text": PROSE, "domain": "docs"}).encode(),
        b'{"text": "caf\xe9 \xff\xfe broken bytes"}',  # invalid UTF-8
        json.dumps({"text": ""}).encode(),  # empty document
        huge.rstrip(b"\n"),
        json.dumps({"body": "no text field"}).encode(),  # missing text field
        b'["a", "list", "not", "an", "object"]',  # non-object JSON
        b"42",
        b'{"text": "lone surrogate \\ud800 here"}',  # valid JSON, no valid UTF-8 encoding
        b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than the JSON parser's stack
        b'{"text": "truncated',
        json.dumps({"text": "def f(x):\n    return x\n", "domain": "python"}).encode(),
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    cfg = CorpusConfig(source="jsonl", paths=[str(path)], max_doc_bytes=1_000_000)
    stats = build_corpus(cfg, tmp_path / "corpus")
    assert stats["documents"] == 2
    assert stats["quarantined"] == {"invalid_utf8": 1, "empty_text": 1, "oversize": 1, "missing_text": 1,
                                    "not_an_object": 2, "invalid_unicode": 1, "malformed_json": 2}
    quarantined = list(read_documents(tmp_path / "corpus" / QUARANTINE_FILE))
    assert len(quarantined) == len(lines) - 2  # every bad line counted once, with where it was
    oversize = next(q for q in quarantined if q["reason"] == "oversize")
    assert oversize["where"] == "hostile.jsonl:4" and len(oversize["raw"]) <= 2000

    filtered = build_filtered(FilterConfig(), tmp_path / "corpus", tmp_path / "filtered")
    kept = [d for p in iter_document_files(tmp_path / "filtered" / "kept") for d in read_documents(p)]
    assert sorted(d["domain"] for d in kept) == ["docs", "python"]
    assert filtered["kept"] == 2 and (tmp_path / "corpus" / DOCUMENTS_FILE).exists()
