"""The lab's Dagster instance: DAGSTER_HOME in the lab home, its storage created once among concurrent runs.

The instance file is the repository's dagster.yaml with the storage profile's storage block (SQLite in the lab
home by default; PostgreSQL under ``LAB_STORAGE=shared``, see orchestration.services).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from dagster import DagsterInstance

from orchestration.config import lab_storage
from orchestration.locks import initialize_once
from orchestration.services import instance_settings, prepare_services


def prepare_dagster_home(home: Path) -> Path:
    """The Dagster instance lives in the lab home, configured by dagster.yaml and the storage profile."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    # Written to a scratch name and renamed into place: a run starting meanwhile never reads half a dagster.yaml.
    scratch = dagster_home / f".dagster.yaml.{os.getpid()}"
    scratch.write_text(yaml.safe_dump(instance_settings(lab_storage()), sort_keys=False))
    os.replace(scratch, dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


def create_storage() -> None:
    """Open the instance once, which creates its databases (tables) and runs their migrations."""
    with DagsterInstance.get() as instance:
        instance.get_runs(limit=1)


def open_instance(home: Path) -> DagsterInstance:
    """The lab home's Dagster instance; the first process on a new lab home creates its storage alone.

    Dagster creates and migrates each SQLite database when an instance first opens it; several processes doing that
    at once can fail or leave a database half-migrated. On PostgreSQL the server is checked first, so that one that
    is down or not configured is a clear error naming the fix, not minutes of retries.
    """
    storage = lab_storage()
    prepare_services(storage, home)
    dagster_home = prepare_dagster_home(home)
    if storage.dagster_storage:
        create_storage()
    else:
        initialize_once(dagster_home / ".storage-initialized", create_storage,
                        creates=dagster_home / "history" / "runs.db")
    return DagsterInstance.get()
