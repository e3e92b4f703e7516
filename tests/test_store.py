"""Fingerprints and atomic commits of stage outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.store import Manifest, Store, content_hash, fingerprint


def manifest(stage: str, fp: str) -> Manifest:
    return Manifest(stage=stage, fingerprint=fp, content_hash="", code_version="c", config={}, upstream={},
                    stats={"n": 1})


def test_fingerprint_depends_on_what_changes_bytes_only() -> None:
    base = fingerprint("s", "code1", {"a": 1, "b": {"c": 2}}, {"up": "h1"})
    assert base == fingerprint("s", "code1", {"b": {"c": 2}, "a": 1}, {"up": "h1"})  # key order is irrelevant
    assert base != fingerprint("s", "code2", {"a": 1, "b": {"c": 2}}, {"up": "h1"})
    assert base != fingerprint("s", "code1", {"a": 1, "b": {"c": 3}}, {"up": "h1"})
    assert base != fingerprint("s", "code1", {"a": 1, "b": {"c": 2}}, {"up": "h2"})


def test_content_hash_sees_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"123")
    first = content_hash(tmp_path / "a")
    (tmp_path / "a" / "manifest.json").write_text("{}")
    assert content_hash(tmp_path / "a") == first  # the manifest is not content
    (tmp_path / "a" / "x.bin").write_bytes(b"124")
    assert content_hash(tmp_path / "a") != first


def test_commit_is_atomic(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def failing(folder: Path) -> Manifest:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        store.commit("stage", "fp1", failing)
    assert store.find("stage", "fp1") is None and not store.path("stage", "fp1").exists()

    def good(folder: Path) -> Manifest:
        (folder / "data.bin").write_bytes(b"payload")
        return manifest("stage", "fp1")

    committed = store.commit("stage", "fp1", good)
    assert committed.content_hash == content_hash(store.path("stage", "fp1"))
    assert store.find("stage", "fp1") == committed
    assert not store.partial_path("stage", "fp1").exists()
    assert [m.fingerprint for m in store.list("stage")] == ["fp1"]
