"""The store on S3 (moto_server on 127.0.0.1): the ordered upload keeps the atomic commit, the cache is bounded, and an
endpoint that goes away mid-upload is a clear error after which a retry commits, with nothing partial visible."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from orchestration.checkpoint_mirror import mirror_checkpoints
from orchestration.config import REPO_ROOT
from orchestration.object_store import ObjectStore, ObjectStoreError
from orchestration.store import MANIFEST, Manifest, Store, content_hash
from tests.conftest import free_port
from tests.s3_proxy import EndpointProxy


def manifest(stage: str, fp: str) -> Manifest:
    return Manifest(stage=stage, fingerprint=fp, content_hash="", code_version="c", config={}, upstream={},
                    stats={"n": 1})


def writer(payload: bytes) -> callable:
    def build(folder: Path) -> Manifest:
        (folder / "data").mkdir()
        (folder / "data" / "a.bin").write_bytes(payload)
        (folder / "b.txt").write_bytes(payload[::-1])
        return manifest("stage", "fp")
    return build


def s3_store(url: str, cache: Path, bound: int = 1 << 30) -> Store:
    remote = ObjectStore(url, cache, bound)
    return Store(cache, remote)


def keys(endpoint: str, bucket: str) -> set[str]:
    listed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"] for item in listed}


@pytest.fixture()
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the endpoint only from the environment, as a user sets it
    return s3_endpoint


def test_commit_uploads_and_another_host_reads_it_back(tmp_path: Path, s3_env: str, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/lab"
    committed = s3_store(url, tmp_path / "host1").commit("stage", "fp", writer(b"payload"))
    assert keys(s3_env, s3_bucket) == {"lab/stage/fp/data/a.bin", "lab/stage/fp/b.txt", f"lab/stage/fp/{MANIFEST}"}
    other = s3_store(url, tmp_path / "host2")  # an empty cache: what another machine sees
    assert other.find("stage", "fp") == committed and other.list("stage") == [committed]
    folder = other.path("stage", "fp")
    assert folder == tmp_path / "host2" / "stage" / "fp"
    assert content_hash(folder) == committed.content_hash and (folder / "data" / "a.bin").read_bytes() == b"payload"


def test_a_partial_upload_is_invisible_and_the_retry_replaces_it(tmp_path: Path, s3_env: str, s3_bucket: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = s3_store(f"s3://{s3_bucket}/lab", tmp_path / "cache")
    real_put, calls = store.remote.fs.put_file, []

    def dies_after_one(local: str, remote: str) -> None:
        if calls:
            raise ConnectionError("killed mid-upload")
        calls.append(remote)
        real_put(local, remote)

    monkeypatch.setattr(store.remote.fs, "put_file", dies_after_one)
    with pytest.raises(ObjectStoreError, match="nothing partial is visible as committed"):
        store.commit("stage", "fp", writer(b"first"))
    assert len(keys(s3_env, s3_bucket)) == 1  # one content file up, no manifest
    assert store.find("stage", "fp") is None and store.list("stage") == []
    assert s3_store(f"s3://{s3_bucket}/lab", tmp_path / "elsewhere").path("stage", "fp").exists() is False

    monkeypatch.setattr(store.remote.fs, "put_file", real_put)
    committed = store.commit("stage", "fp", writer(b"second"))
    assert store.find("stage", "fp") == committed
    fresh = s3_store(f"s3://{s3_bucket}/lab", tmp_path / "fresh").path("stage", "fp")
    assert (fresh / "data" / "a.bin").read_bytes() == b"second"


def test_the_cache_is_bounded(tmp_path: Path, s3_env: str, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/lab"
    writer_store = s3_store(url, tmp_path / "writer")
    for fp in ("one", "two", "three"):
        writer_store.commit("stage", fp, lambda folder, fp=fp: (
            (folder / "x.bin").write_bytes(b"x" * 4000), manifest("stage", fp))[1])
    cache = tmp_path / "reader"
    s3_store(url, cache, bound=6000).path("stage", "one")  # each read by a process of its own
    s3_store(url, cache, bound=6000).path("stage", "two")
    assert (cache / "stage" / "one" / MANIFEST).is_file()  # over the bound, but used within the hour: kept
    os.utime(cache / "stage" / "one" / MANIFEST, (0, 0))  # `one` was last used long ago
    s3_store(url, cache, bound=6000).path("stage", "three")
    assert not (cache / "stage" / "one").exists()
    assert (cache / "stage" / "two" / MANIFEST).is_file() and (cache / "stage" / "three" / MANIFEST).is_file()
    assert (s3_store(url, cache, bound=6000).path("stage", "one") / "x.bin").stat().st_size == 4000


@pytest.fixture()
def endpoint(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[EndpointProxy]:
    proxy = EndpointProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    proxy.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail in seconds, not minutes of retries
    yield proxy


def test_the_endpoint_gone_mid_upload_is_a_clear_error_and_a_retry_commits(
        tmp_path: Path, endpoint: EndpointProxy, s3_endpoint: str, s3_bucket: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = s3_store(f"s3://{s3_bucket}/lab", tmp_path / "cache")
    real_put = store.remote.fs.put_file

    def endpoint_stops_after_first_file(local: str, remote: str) -> None:
        real_put(local, remote)
        endpoint.stop()

    monkeypatch.setattr(store.remote.fs, "put_file", endpoint_stops_after_first_file)
    with pytest.raises(ObjectStoreError, match=f"s3://{s3_bucket}/lab/stage/fp/.* failed.*AWS_ENDPOINT_URL"):
        store.commit("stage", "fp", writer(b"payload"))
    assert f"lab/stage/fp/{MANIFEST}" not in keys(s3_endpoint, s3_bucket)  # half an output, no commit marker
    with pytest.raises(ObjectStoreError, match="reading"):
        store.find("stage", "fp")  # while it is down: an error, not "not there"

    endpoint.start()
    monkeypatch.setattr(store.remote.fs, "put_file", real_put)
    assert store.find("stage", "fp") is None
    committed = store.commit("stage", "fp", writer(b"payload"))
    assert s3_store(f"s3://{s3_bucket}/lab", tmp_path / "other").find("stage", "fp") == committed


def dcp_step(partial: Path, step: int, complete: bool) -> None:
    folder = partial / "checkpoint" / f"step-{step}"
    folder.mkdir(parents=True)
    (folder / "__0_0.distcp").write_bytes(f"shard {step}".encode())
    if complete:
        (folder / ".metadata").write_bytes(f"metadata {step}".encode())


def test_a_run_killed_while_checkpointing_resumes_on_another_host_from_the_last_complete_step(
        tmp_path: Path, s3_env: str, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/lab"
    host1 = s3_store(url, tmp_path / "host1")
    partial = host1.partial_path("checkpoint", "fp")
    partial.mkdir(parents=True)
    with pytest.raises(RuntimeError, match="rank 1 killed"), \
            mirror_checkpoints(host1.remote, partial, "checkpoint", "fp"):
        (partial / "train_steps.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
        dcp_step(partial, 1, complete=True)
        dcp_step(partial, 2, complete=True)
        dcp_step(partial, 3, complete=False)  # the save the kill cut short
        raise RuntimeError("rank 1 killed")
    mirrored = host1.remote.names("checkpoint", ".partial-fp")
    assert "checkpoint/step-2/.metadata" in mirrored and not any("step-3" in name for name in mirrored)
    host1.remote.put_file(partial / "checkpoint/step-3/__0_0.distcp", "checkpoint", ".partial-fp",
                          "checkpoint/step-3/__0_0.distcp")  # an upload of step 3 cut short, had it completed
    assert host1.find("checkpoint", "fp") is None  # a mirrored partial is not an output

    def resume(folder: Path) -> Manifest:
        assert sorted(p.name for p in (folder / "checkpoint").iterdir()) == ["step-1", "step-2"]
        assert (folder / "train_steps.jsonl").read_text().count("step") == 2
        shutil.rmtree(folder / "checkpoint" / "step-2")  # stands for training on from step 2 to the end
        dcp_step(folder, 2, complete=True)
        dcp_step(folder, 4, complete=True)
        return manifest("checkpoint", "fp")

    committed = s3_store(url, tmp_path / "host2").commit("checkpoint", "fp", resume, keep_partial=True)
    assert host1.find("checkpoint", "fp") == committed
    assert host1.remote.names("checkpoint", ".partial-fp") == []  # the mirror is gone once committed


def test_lab_names_the_endpoint_when_it_is_down(tmp_path: Path, s3_bucket: str) -> None:
    env = {**os.environ, "LAB_HOME": str(tmp_path), "LAB_STORE_URL": f"s3://{s3_bucket}/lab",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1",  # nothing listens there
           "PYTHONPATH": str(REPO_ROOT)}
    env.pop("LAB_STORAGE", None)
    result = subprocess.run([sys.executable, "-m", "orchestration.cli", "plan", "experiment=tiny"], env=env,
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"s3://{s3_bucket}/lab/corpus" in result.stderr and "AWS_ENDPOINT_URL" in result.stderr
