"""The lab home's services: where Dagster's instance and MLflow's tracking store keep their records.

The storage profile decides (``LAB_STORAGE`` in the environment; conf/storage/): ``local``, the default, keeps both
in SQLite files in the lab home; ``shared`` keeps both on PostgreSQL, so a team's machines share one history. The
connection (host, port, user, password) then comes only from the environment, through the standard libpq variables
PGHOST, PGPORT, PGUSER and PGPASSWORD: Dagster reads them through the ``env:`` references of its instance file,
and the MLflow URI names no host or user, so the driver reads them too. No credential is in the config, so none is
in a log, a manifest, an MLflow param or Dagster's metadata.

``python -m orchestration.services dagster-home | mlflow-uri`` prints what ``make ui`` serves.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from orchestration.config import REPO_ROOT, StorageConfig, default_lab_home, lab_storage

CONNECT_TIMEOUT_S = 5
SETUP_HINT = ("the shared storage profile reads PostgreSQL's connection from PGHOST, PGPORT, PGUSER and PGPASSWORD "
              "(see docs/scaling.md)")


class ServiceError(ValueError):
    """A service of the storage profile is missing or unreachable; the message names the fix.

    A ValueError, so that ``lab`` prints it as one line rather than a traceback.
    """


def mlflow_tracking_uri(storage: StorageConfig, home: Path) -> str:
    """The profile's MLflow store: its URI, or a SQLite file in the lab home."""
    return storage.mlflow_tracking_uri or f"sqlite:///{home / 'mlflow.db'}"


def uses_postgres(storage: StorageConfig) -> bool:
    return "postgres" in storage.dagster_storage or storage.mlflow_tracking_uri.startswith("postgresql")


def instance_settings(storage: StorageConfig) -> dict[str, Any]:
    """The Dagster instance file: the repository's dagster.yaml, with the profile's storage block if it has one."""
    settings = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    if storage.dagster_storage:
        settings["storage"] = storage.dagster_storage
    return settings


def env_references(block: Any) -> list[str]:
    """The environment variables a Dagster config block reads (its ``{env: NAME}`` values), in order."""
    if isinstance(block, dict):
        if set(block) == {"env"}:
            return [block["env"]]
        return [name for value in block.values() for name in env_references(value)]
    return []


def resolve_env(block: Any) -> Any:
    """The block with each ``{env: NAME}`` replaced by the variable's value, as Dagster resolves it."""
    if isinstance(block, dict):
        if set(block) == {"env"}:
            return os.environ[block["env"]]
        return {key: resolve_env(value) for key, value in block.items()}
    return block


def check_reachable(label: str, url: str) -> None:
    """Connect once, with a short timeout, so that a stopped server is a clear error and not minutes of retries.

    ``url`` is a SQLAlchemy URL; what it leaves out (host, port, user, password), libpq takes from PG* variables.
    """
    import psycopg2
    from sqlalchemy.engine import make_url

    parts = make_url(url)
    given = {"host": parts.host, "port": parts.port, "user": parts.username, "password": parts.password}
    try:
        psycopg2.connect(dbname=parts.database, connect_timeout=CONNECT_TIMEOUT_S,
                         **{key: value for key, value in given.items() if value not in (None, "")}).close()
    except psycopg2.OperationalError as error:
        # libpq's message names the host, port, user and database, never the password.
        reason = " ".join(str(error).split())
        where = f"{os.environ.get('PGHOST', '?')}:{os.environ.get('PGPORT', '5432')}"
        fix = (f"create it once with `createdb {parts.database}`" if "does not exist" in reason else
               "start the server, or set PGHOST, PGPORT, PGUSER and PGPASSWORD to one that runs")
        raise ServiceError(f"{label}: PostgreSQL at {where} cannot be used ({reason}); {fix}") from None


def check_postgres(storage: StorageConfig) -> None:
    """Every variable the profile reads is set, and both databases answer; otherwise a ServiceError naming the fix."""
    postgres = storage.dagster_storage.get("postgres")
    missing = [name for name in env_references(postgres) if name not in os.environ]
    if missing:
        raise ServiceError(f"storage profile {os.environ.get('LAB_STORAGE', '')!r}: {', '.join(missing)} not set; "
                           f"{SETUP_HINT}")
    if postgres:
        from dagster_postgres.utils import pg_url_from_config

        check_reachable("Dagster's instance storage", pg_url_from_config(resolve_env(postgres)))
    if storage.mlflow_tracking_uri.startswith("postgresql"):
        check_reachable("MLflow's tracking store", storage.mlflow_tracking_uri)


def prepare_mlflow_store(storage: StorageConfig, home: Path) -> None:
    """Create MLflow's tables on a new PostgreSQL database now, in one process, before runs open it side by side."""
    from mlflow.tracking import MlflowClient

    MlflowClient(mlflow_tracking_uri(storage, home)).search_experiments(max_results=1)


def prepare_services(storage: StorageConfig, home: Path) -> None:
    """Check the profile's PostgreSQL (if it has one) and create MLflow's tables there once."""
    if uses_postgres(storage):
        check_postgres(storage)
        prepare_mlflow_store(storage, home)


def main(argv: list[str]) -> int:
    """``dagster-home``: write the lab home's Dagster instance file and print DAGSTER_HOME; ``mlflow-uri``: print
    the tracking store's URI (for ``mlflow ui --backend-store-uri``)."""
    from orchestration.dagster_home import prepare_dagster_home

    home, storage = default_lab_home(), lab_storage()
    try:
        prepare_services(storage, home)
    except ServiceError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 2
    if argv == ["dagster-home"]:
        print(prepare_dagster_home(home))
    elif argv == ["mlflow-uri"]:
        print(mlflow_tracking_uri(storage, home))
    else:
        print(f"usage: python -m orchestration.services dagster-home | mlflow-uri  (got {argv})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
