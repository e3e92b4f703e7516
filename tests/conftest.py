"""Shared fixtures: an S3 endpoint (moto_server on 127.0.0.1) for the fsspec/s3fs and DVC remote paths, and what a
bucket holds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def preset_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One lab home for a module's tests (the tiny presets share their corpus, tokenizer and arms)."""
    home = tmp_path_factory.mktemp("lab")
    patch = pytest.MonkeyPatch()
    patch.setenv("LAB_HOME", str(home))
    yield home
    patch.undo()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end test files first (stable otherwise): `make test` hands whole files to its workers in this order,
    and the long ones started last would leave one worker running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API on loopback; credentials are moto's dummy ones, set only for this test session."""
    port = free_port()
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("moto_server did not start within 30 s")
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture()
def s3_bucket(s3_endpoint: str) -> str:
    import boto3

    name = f"lab-test-{time.time_ns()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def bucket_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def committed(objects: dict[str, bytes]) -> set[str]:
    """The stages with a committed output (a manifest) in the bucket."""
    return {key.split("/")[1] for key in objects if key.count("/") == 3 and key.endswith("/manifest.json")}
