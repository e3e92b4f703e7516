"""The lab's Dagster instance: DAGSTER_HOME in the lab home, its SQLite storage created once among concurrent runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dagster import DagsterInstance

from orchestration.config import REPO_ROOT
from orchestration.locks import initialize_once


def prepare_dagster_home(home: Path) -> Path:
    """The Dagster instance lives in the lab home, configured by the repository's dagster.yaml."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    # Copied to a scratch name and renamed into place: a run starting meanwhile never reads half a dagster.yaml.
    scratch = dagster_home / f".dagster.yaml.{os.getpid()}"
    shutil.copyfile(REPO_ROOT / "dagster.yaml", scratch)
    os.replace(scratch, dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


def create_storage() -> None:
    """Open the instance once, which creates its SQLite databases and runs their migrations."""
    with DagsterInstance.get() as instance:
        instance.get_runs(limit=1)


def open_instance(home: Path) -> DagsterInstance:
    """The lab home's Dagster instance; the first process on a new lab home creates its storage alone.

    Dagster creates and migrates each SQLite database when an instance first opens it; several processes doing that
    at once can fail or leave a database half-migrated.
    """
    dagster_home = prepare_dagster_home(home)
    initialize_once(dagster_home / ".storage-initialized", create_storage, creates=dagster_home / "history" / "runs.db")
    return DagsterInstance.get()
