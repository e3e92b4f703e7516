"""The tiny lineage on the S3-and-PostgreSQL profile (moto_server and a throwaway PostgreSQL on 127.0.0.1), with fake
credentials in the environment.

One lineage, two runs: in the first the S3 endpoint goes away at the first upload of the checkpoint output's commit (a
proxy in front of moto stops there), which fails with a clear error and leaves nothing visible as committed; the
training's checkpoints were mirrored to the bucket as they landed. The local partial is then deleted (a retry on
another host), the endpoint comes back, and the second run restores the checkpoints from the bucket, resumes from
the last one instead of training again, and commits everything. Then: every output, DVC object and MLflow artifact
is in the bucket, the history is in PostgreSQL, the lab home holds only caches, and no credential value is in
MLflow, Dagster's event log, the bucket (manifests, DVC pointers and config, artifacts), the lab home or the logs.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.config import REPO_ROOT
from tests.conftest import bucket_objects, committed
from tests.postgres import PostgresServer, postgres_server  # noqa: F401 (a fixture)
from tests.s3_proxy import EndpointProxy

STAGES = ("corpus", "filtered", "tokenizer", "mixed", "checkpoint", "eval")


@pytest.mark.e2e
def test_tiny_lineage_on_s3_and_postgres(postgres_server: PostgresServer, s3_endpoint: str,  # noqa: F811
                                         s3_bucket: str, tmp_path: Path) -> None:
    server, home = postgres_server, tmp_path / "lab"
    home.mkdir()
    for database in ("lab_dagster", "lab_mlflow"):
        server.create_database(database)
    proxy = EndpointProxy(int(s3_endpoint.rsplit(":", 1)[1]),
                          stop_on=re.compile(rf"PUT /{s3_bucket}/lab/checkpoint/[0-9a-f]{{16}}/".encode()))
    proxy.start()
    credentials = {"AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
                   "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}
    env = {**os.environ, **server.env(), **credentials, "AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "2",
           "LAB_HOME": str(home), "LAB_STORAGE": "shared", "LAB_STORE_URL": f"s3://{s3_bucket}/lab",
           "PYTHONPATH": str(REPO_ROOT)}
    logs: list[str] = []

    def lab(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "orchestration.cli", *args], env=env, cwd=REPO_ROOT,
                                capture_output=True, text=True)
        logs.append(result.stdout + result.stderr)
        return result

    down = lab("materialize", "experiment=tiny")
    assert proxy.stopped_on_request.is_set() and down.returncode != 0, logs[-1][-3000:]
    assert "AWS_ENDPOINT_URL" in logs[-1] and "nothing partial is visible as committed" in logs[-1], logs[-1][-3000:]
    objects = bucket_objects(s3_endpoint, s3_bucket)
    assert committed(objects) == {"corpus", "filtered", "tokenizer", "mixed"}  # no checkpoint: its upload was cut
    assert any(re.fullmatch(r"lab/checkpoint/\.partial-\w+/checkpoint/step-\d+/\.metadata", key) for key in objects)
    for partial in (home / "cache" / "store" / "checkpoint").glob(".partial-*"):
        shutil.rmtree(partial)  # the retry runs where the interrupted training's files are not

    proxy.start()  # the endpoint is back
    retry = lab("materialize", "experiment=tiny")
    assert retry.returncode == 0, logs[-1][-3000:]
    assert "Loading the checkpoint from" in logs[-1]  # resumed from the mirrored checkpoints
    objects = bucket_objects(s3_endpoint, s3_bucket)
    assert committed(objects) >= set(STAGES) and not [key for key in objects if "/.partial-" in key]
    assert any(key.startswith("lab/dvc/files/md5/") for key in objects)  # DVC's objects
    assert {f"lab/{stage}/{key.split('/')[2]}" for stage in STAGES for key in objects
            if key.startswith(f"lab/{stage}/") and key.endswith(".dvc")}  # DVC pointers beside the outputs
    artifacts = {key.split("/")[3] for key in objects if key.startswith("lab/mlflow-artifacts/tiny/")}
    assert len(artifacts) >= len(STAGES)  # a run's artifacts per stage

    # The history is in PostgreSQL; the lab home holds only caches, the Dagster instance file and its run logs.
    stage_runs = {row[0] for row in server.query("lab_mlflow", "SELECT value FROM tags WHERE key = 'lab.stage'")}
    assert set(STAGES) <= stage_runs and server.query("lab_dagster", "SELECT run_id FROM runs")
    assert {p.name for p in home.iterdir()} <= {"cache", "dagster", "locks"}, sorted(home.iterdir())

    # No credential value anywhere the lab writes (the bucket name is found: the scan sees what was written).
    dumps = {f"postgres {db}": server.dump(db).encode() for db in ("lab_dagster", "lab_mlflow")}
    files = {str(p): p.read_bytes() for p in home.rglob("*") if p.is_file()}
    written = {**dumps, **files, **{f"s3 {k}": v for k, v in objects.items()},
               **{f"log {i}": log.encode() for i, log in enumerate(logs)}}
    assert any(s3_bucket.encode() in data for data in dumps.values())
    for value in (*credentials.values(), server.password):
        leaks = [where for where, data in written.items() if value.encode() in data]
        assert not leaks, leaks
