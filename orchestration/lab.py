"""One arm's view of the lab home: its config composed once, its plan, and the shared store, DVC and MLflow.

Imports neither Dagster nor MLflow at module level, so ``lab plan`` and ``lab experiments`` stay quick.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING

from orchestration.config import lab_home, load_experiment
from orchestration.lineage import PlanItem, plan
from orchestration.store import Store
from orchestration.versioning import DvcStore

if TYPE_CHECKING:
    from orchestration.tracking import Tracker


class Lab:
    """The lab home's services for one arm: its composed config, planned once, and the shared stores."""

    def __init__(self, overrides: list[str]):
        self.overrides = overrides
        self.cfg = load_experiment(overrides)
        self.home = lab_home(self.cfg)
        self.store = Store(self.home / "store")
        self.dvc = DvcStore(self.store.root, self.cfg.storage.dvc_remote or str(self.home / "dvc-remote"),
                            self.cfg.storage.dvc_remote_options)
        self._plan: dict[str, PlanItem] = {}

    @cached_property
    def tracker(self) -> Tracker:
        from orchestration.tracking import Tracker  # MLflow: imported only where a run is tracked

        uri = self.cfg.storage.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"
        return Tracker(uri, self.home / "mlartifacts", self.cfg.storage.mlflow_ui_url)

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
