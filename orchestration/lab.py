"""One arm's view of the lab home: its config composed once, its plan, and the shared store, DVC and MLflow.

Imports neither Dagster nor MLflow at module level, so ``lab plan`` and ``lab experiments`` stay quick.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING

from orchestration.config import (
    STORAGE_PROFILE_VARIABLE,
    ConfigError,
    lab_home,
    lab_storage,
    load_experiment,
    store_url,
)
from orchestration.lineage import PlanItem, plan
from orchestration.object_store import ObjectStore
from orchestration.services import mlflow_tracking_uri
from orchestration.store import Store
from orchestration.versioning import DvcStore

if TYPE_CHECKING:
    from orchestration.tracking import Tracker


class Lab:
    """The lab home's services for one arm: its composed config, planned once, and the shared stores."""

    def __init__(self, overrides: list[str]):
        self.overrides = overrides
        self.cfg = load_experiment(overrides)
        if self.cfg.storage.dagster_storage != lab_storage().dagster_storage:
            # The arm would track into another MLflow store than the lab home's Dagster instance records.
            raise ConfigError(f"{' '.join(overrides)}: the storage profile serves the whole lab home; choose it with "
                              f"{STORAGE_PROFILE_VARIABLE}=<profile> in the environment, not with an override")
        self.home = lab_home(self.cfg)
        # With an object store the lab home keeps only caches: the outputs' (bounded) and DVC's (emptied after
        # each push); the DVC remote and MLflow's artifacts default to folders of the object store.
        self.store_url = store_url(self.cfg)
        if self.store_url:
            cache = ObjectStore(self.store_url, self.home / "cache" / "store", int(self.cfg.storage.cache_gb * 1e9))
            self.store = Store(cache.cache, cache)
        else:
            self.store = Store(self.home / "store")
        default_remote = f"{self.store_url}/dvc" if self.store_url else str(self.home / "dvc-remote")
        self.dvc = DvcStore(self.store.root, self.cfg.storage.dvc_remote or default_remote,
                            self.cfg.storage.dvc_remote_options, self.store.remote)
        self._plan: dict[str, PlanItem] = {}

    @cached_property
    def tracker(self) -> Tracker:
        from orchestration.tracking import Tracker  # MLflow: imported only where a run is tracked

        storage = self.cfg.storage
        artifacts = f"{self.store_url}/mlflow-artifacts" if self.store_url else self.home / "mlartifacts"
        return Tracker(mlflow_tracking_uri(storage, self.home), artifacts, storage.mlflow_ui_url,
                       self.home / "locks" if self.store_url else None)

    def plan(self) -> list[PlanItem]:
        self._plan = {item.stage: item for item in plan(self.cfg, self.store)}
        return list(self._plan.values())

    def item(self, stage: str) -> PlanItem:
        """The stage's plan item: planned once; planned again only where an upstream output was still to come."""
        if stage not in self._plan or self._plan[stage].upstream is None:
            self.plan()
        return self._plan[stage]


_LABS: dict[tuple[str, tuple[str, ...]], Lab] = {}


def lab_for(overrides: list[str]) -> Lab:
    """One Lab per lab home, arm and process: the config is composed and the plan made once per run."""
    key = (os.environ.get("LAB_HOME", ""), tuple(overrides))
    if key not in _LABS:
        _LABS[key] = Lab(overrides)
    return _LABS[key]
