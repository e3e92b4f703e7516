"""DVC: outputs pushed to a remote come back byte for byte, from a local folder and from S3 (moto)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestration.store import content_hash
from orchestration.versioning import DvcStore


def roundtrip(store: DvcStore) -> None:
    output = store.root / "stage" / "fp"
    output.mkdir(parents=True)
    (output / "tokens.bin").write_bytes(bytes(range(256)) * 100)
    (output / "sub").mkdir()
    (output / "sub" / "meta.json").write_text('{"a": 1}')
    expected = content_hash(output)
    pointer = store.add_and_push(output)
    assert pointer["pointer_file"] == "stage/fp.dvc" and pointer["nfiles"] == 2
    shutil.rmtree(output)
    shutil.rmtree(store.root / ".dvc" / "cache")
    store.pull(pointer["pointer_file"])
    assert content_hash(output) == expected


def test_local_remote_roundtrip(tmp_path: Path) -> None:
    roundtrip(DvcStore(tmp_path / "store", str(tmp_path / "remote"), {}))


def test_s3_remote_roundtrip(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    roundtrip(DvcStore(tmp_path / "store", f"s3://{s3_bucket}/dvc", {"endpointurl": s3_endpoint}))


def test_push_failure_names_the_command(tmp_path: Path) -> None:
    store = DvcStore(tmp_path / "store", "s3://bucket/x", {"endpointurl": "http://127.0.0.1:9"})
    (tmp_path / "store" / "s" / "f").mkdir(parents=True)
    (tmp_path / "store" / "s" / "f" / "x").write_text("x")
    with pytest.raises(RuntimeError, match="dvc push"):
        store.add_and_push(tmp_path / "store" / "s" / "f")
