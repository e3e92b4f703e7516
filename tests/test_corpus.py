"""Corpus readers: the embedded corpus, JSONL/Parquet locally and on S3, and bad input quarantined."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import CorpusConfig, DomainCap
from curation.corpus import build_corpus, classify
from curation.documents import DOCUMENTS_FILE, QUARANTINE_FILE, read_documents


def documents(folder: Path) -> list[dict]:
    return list(read_documents(folder / DOCUMENTS_FILE))


def test_python_env_corpus_is_deterministic_and_relative(tmp_path: Path) -> None:
    cfg = CorpusConfig(domains={"python": DomainCap(20, 10**6), "license": DomainCap(10, 10**6)})
    first, second = build_corpus(cfg, tmp_path / "a"), build_corpus(cfg, tmp_path / "b")
    assert first == second
    docs = documents(tmp_path / "a")
    assert [d["id"] for d in docs] == [d["id"] for d in documents(tmp_path / "b")]
    assert {d["domain"] for d in docs} == {"python", "license"}
    assert all(d["source"].split("/")[0] in ("stdlib", "site-packages") for d in docs)
    assert not any(d["source"].startswith("/") for d in docs)
    assert all(d["bytes"] == len(d["text"].encode()) for d in docs)


def test_domains_by_file_name() -> None:
    assert classify("LICENSE.txt") == "license"
    assert classify("decoder.py") == "python"
    assert classify("index.rst") == "docs"
    assert classify("app.min.js") == "code"
    assert classify("setup.cfg") == "data"
    assert classify("image.png") is None


def write_jsonl(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


def test_jsonl_quarantines_malformed_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl.gz"
    write_jsonl(path, [
        json.dumps({"content": "good one", "src": "a"}),
        '{"content": "truncated',
        json.dumps({"other": "no text field"}),
        json.dumps({"content": "   "}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"content": "good two", "src": "b"}),
    ])
    cfg = CorpusConfig(source="jsonl", paths=[str(path)], text_field="content", domain_field="src")
    stats = build_corpus(cfg, tmp_path / "out")
    assert [d["text"] for d in documents(tmp_path / "out")] == ["good one", "good two"]
    assert stats["quarantined"] == {"malformed_json": 1, "missing_content": 1, "empty_text": 1, "not_an_object": 1}
    quarantined = list(read_documents(tmp_path / "out" / QUARANTINE_FILE))
    assert [q["where"] for q in quarantined] == ["corpus.jsonl.gz:2", "corpus.jsonl.gz:3",
                                                 "corpus.jsonl.gz:4", "corpus.jsonl.gz:5"]


def test_missing_corpus_path_is_a_clear_error(tmp_path: Path) -> None:
    cfg = CorpusConfig(source="jsonl", paths=[str(tmp_path / "nope" / "*.jsonl")])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        build_corpus(cfg, tmp_path / "out")


def test_parquet_with_configured_fields(tmp_path: Path) -> None:
    table = pa.table({"body": ["alpha text", None, "gamma text"], "kind": ["x", "y", None]})
    pq.write_table(table, tmp_path / "c.parquet")
    cfg = CorpusConfig(source="parquet", paths=[str(tmp_path / "c.parquet")], text_field="body",
                       domain_field="kind", default_domain="misc")
    stats = build_corpus(cfg, tmp_path / "out")
    docs = documents(tmp_path / "out")
    assert [(d["text"], d["domain"]) for d in docs] == [("alpha text", "x"), ("gamma text", "misc")]
    assert stats["quarantined"] == {"missing_body": 1}


def test_jsonl_from_s3(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    import boto3

    body = "\n".join(json.dumps({"text": f"document {i}", "id": str(i)}) for i in range(5)) + "\n{broken\n"
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=s3_bucket, Key="in/part-0.jsonl", Body=body)
    cfg = CorpusConfig(source="jsonl", paths=[f"s3://{s3_bucket}/in/*.jsonl"],
                       storage_options={"endpoint_url": s3_endpoint})
    stats = build_corpus(cfg, tmp_path / "out")
    assert [d["id"] for d in documents(tmp_path / "out")] == ["0", "1", "2", "3", "4"]
    assert stats["quarantined"] == {"malformed_json": 1}
