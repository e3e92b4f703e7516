"""The shared storage profile (LAB_STORAGE=shared): Dagster's instance and MLflow's store on PostgreSQL.

The connection comes from PGHOST/PGPORT/PGUSER/PGPASSWORD only; a missing variable or a server that is down is a
clear error naming the fix; the tiny lineage runs against a throwaway PostgreSQL (tests/postgres.py), its history
lands there and survives a restart of the server, and the password is nowhere in what the lab writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestration.config import REPO_ROOT, ConfigError, lab_storage
from orchestration.dagster_home import prepare_dagster_home
from orchestration.lab import Lab
from orchestration.services import ServiceError, check_postgres
from tests.conftest import free_port
from tests.postgres import PostgresServer, postgres_server  # noqa: F401 (a fixture)

PG_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD")


@pytest.fixture()
def shared(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "lab"))
    monkeypatch.setenv("LAB_STORAGE", "shared")
    for name, value in zip(PG_VARIABLES, ("127.0.0.1", "5432", "lab", "not-a-real-password"), strict=True):
        monkeypatch.setenv(name, value)
    return tmp_path / "lab"


def test_a_missing_variable_is_named(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD")
    with pytest.raises(ServiceError, match="PGPASSWORD not set.*PGHOST, PGPORT, PGUSER and PGPASSWORD"):
        check_postgres(lab_storage())


def test_an_unreachable_server_is_a_clear_error(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPORT", str(free_port()))  # nothing listens there
    with pytest.raises(ServiceError, match="Dagster's instance storage: PostgreSQL at 127.0.0.1:.*start the server"):
        check_postgres(lab_storage())


def test_the_instance_file_reads_the_connection_from_the_environment(shared: Path) -> None:
    text = (prepare_dagster_home(shared) / "dagster.yaml").read_text()
    db = yaml.safe_load(text)["storage"]["postgres"]["postgres_db"]
    assert {db[key]["env"] for key in ("hostname", "port", "username", "password")} == set(PG_VARIABLES)
    assert "not-a-real-password" not in text
    assert lab_storage().mlflow_tracking_uri == "postgresql+psycopg2:///lab_mlflow"  # no host, user or password


def test_the_local_profile_keeps_dagster_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    monkeypatch.delenv("LAB_STORAGE", raising=False)
    written = yaml.safe_load((prepare_dagster_home(tmp_path) / "dagster.yaml").read_text())
    assert written == yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())


def test_the_profile_is_not_an_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    monkeypatch.delenv("LAB_STORAGE", raising=False)
    with pytest.raises(ConfigError, match="LAB_STORAGE=<profile>"):
        Lab(["experiment=tiny", "storage=shared"])


def lab(home: Path, server: PostgresServer, *args: str) -> subprocess.CompletedProcess:
    """`lab` in a process of its own: the profile and the connection from its environment, as a user runs it."""
    env = {**os.environ, **server.env(), "LAB_HOME": str(home), "LAB_STORAGE": "shared",
           "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "orchestration.cli", *args], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True)
    (home / f"lab-{len(list(home.glob('lab-*.log')))}.log").write_text(result.stdout + result.stderr)
    return result


def history(server: PostgresServer) -> tuple[set, set, set]:
    """Dagster's runs and materialized assets, and MLflow's runs, as PostgreSQL holds them."""
    runs = {row[0] for row in server.query("lab_dagster", "SELECT run_id FROM runs WHERE status = 'SUCCESS'")}
    assets = {row[0] for row in server.query(
        "lab_dagster", "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")}
    mlflow = {row[0] for row in server.query("lab_mlflow", "SELECT run_uuid FROM runs WHERE status = 'FINISHED'")}
    return runs, assets, mlflow


@pytest.mark.e2e
def test_tiny_lineage_on_postgres(postgres_server: PostgresServer, tmp_path: Path) -> None:  # noqa: F811
    server, home = postgres_server, tmp_path / "lab"
    home.mkdir()
    for database in ("lab_dagster", "lab_mlflow"):
        server.create_database(database)
    first = lab(home, server, "materialize", "experiment=tiny")
    assert first.returncode == 0, first.stderr[-3000:]
    runs, assets, mlflow = history(server)
    stages = ("corpus", "filtered", "tokenizer", "mixed", "checkpoint", "eval")
    assert {f'["tiny", "{stage}"]' for stage in stages} <= assets
    stage_runs = server.query("lab_mlflow", "SELECT value FROM tags WHERE key = 'lab.stage'")
    assert set(stages) <= {row[0] for row in stage_runs}
    assert runs and len(mlflow) >= len(stages)
    assert not (home / "mlflow.db").exists() and not (home / "dagster" / "history").exists()  # no SQLite beside it

    # The server restarts between two runs: everything recorded before is still there, and the next run adds to it.
    server.stop()
    down = lab(home, server, "materialize", "experiment=tiny", "eval.batch_size=4")
    assert down.returncode == 2 and "start the server" in down.stderr, down.stderr[-2000:]
    server.start()
    second = lab(home, server, "materialize", "experiment=tiny", "eval.batch_size=4")
    assert second.returncode == 0, second.stderr[-3000:]
    runs_after, assets_after, mlflow_after = history(server)
    assert runs < runs_after and assets <= assets_after and mlflow < mlflow_after

    # The password is in no database, log or file of the lab home.
    for database in ("lab_dagster", "lab_mlflow"):
        assert server.password not in server.dump(database), database
    for path in home.rglob("*"):
        if path.is_file():
            assert server.password.encode() not in path.read_bytes(), path
