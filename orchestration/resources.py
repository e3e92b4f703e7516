"""The ``lab`` Dagster resource: composes the experiment config and runs a stage with caching, tracking and DVC.

Every asset calls ``lab.materialize(context, stage, build)``. The resource decides reuse by fingerprint, opens the
MLflow run, builds into a partial folder committed atomically, versions the output with DVC, and returns the
Dagster ``MaterializeResult`` whose data version is the output's content hash.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    DataVersion,
    MaterializeResult,
    MetadataValue,
)
from pydantic import PrivateAttr

from orchestration.config import ExperimentConfig, compose_experiment, lab_home
from orchestration.lineage import STAGE_BY_NAME, PlanItem, plan, resolve_parent
from orchestration.store import Manifest, Store
from orchestration.tracking import Tracker, git_revision
from orchestration.versioning import DvcStore


@dataclass
class StageRun:
    """What a stage's build function gets: the config, its upstream outputs and a folder to write into."""

    cfg: ExperimentConfig
    output: Path
    upstream: dict[str, Path]  # by stage name; "parent": the parent experiment's checkpoint output
    upstream_manifests: dict[str, Manifest]
    context: AssetExecutionContext
    mlflow_tracking_uri: str
    mlflow_run_id: str
    # The parent's checkpoint step this stage starts from (continual pretraining, branches); None without a parent.
    parent_step: int | None = None


@dataclass
class StageResult:
    stats: dict
    # Extra Dagster metadata (tables, markdown) beyond the standard fingerprint/version/MLflow/DVC entries.
    metadata: dict = field(default_factory=dict)
    # Files to attach to the MLflow run (plots, reports), relative to the output folder.
    artifacts: list[str] = field(default_factory=list)


class Lab:
    """The lab home's services for one composed experiment."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self.home = lab_home(cfg)
        self.store = Store(self.home / "store")
        self.dvc = DvcStore(self.store.root, self.cfg.storage.dvc_remote or str(self.home / "dvc-remote"),
                            self.cfg.storage.dvc_remote_options)

    @cached_property
    def tracker(self) -> Tracker:
        uri = self.cfg.storage.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"
        return Tracker(uri, self.home / "mlartifacts")


class LabResource(ConfigurableResource):
    """Hydra overrides for the experiment; the Dagster launchpad sets them as a list of strings."""

    overrides: list[str] = []
    _lab: Lab | None = PrivateAttr(default=None)

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            self._lab = Lab(compose_experiment(self.overrides)[0])
        return self._lab

    def materialize(
        self, context: AssetExecutionContext, stage: str, build: Callable[[StageRun], StageResult]
    ) -> MaterializeResult:
        lab = self.lab
        item = {item.stage: item for item in plan(lab.cfg, lab.store)}[stage]
        if item.upstream is None:
            raise RuntimeError(
                f"'{stage}' cannot run yet: {item.reason}. Run `lab materialize` with the same overrides (it "
                f"materializes a parent experiment first), or select the upstream assets too"
            )
        if item.manifest is not None:
            context.log.info(f"{stage}: reusing {item.fingerprint} ({item.reason})")
            pointer = lab.dvc.pointer(lab.store.path(stage, item.fingerprint))
            return self._result(item.manifest, {"reused": True, "dvc": MetadataValue.json(pointer or {})})
        run_id = lab.tracker.start_run(lab.cfg.name, stage, self._tags(context, item), item.config)
        try:
            manifest, result = self._build(context, item, run_id, build)
            pointer = lab.dvc.add_and_push(lab.store.path(stage, manifest.fingerprint))
        except BaseException:
            lab.tracker.finish_run(run_id, {}, {"lab.error": traceback.format_exc()[-4000:]}, [], "FAILED")
            raise
        output = lab.store.path(stage, manifest.fingerprint)
        artifacts = [output / "manifest.json", lab.store.root / pointer["pointer_file"]]
        lab.tracker.finish_run(
            run_id, manifest.stats,
            {"lab.content_hash": manifest.content_hash, "lab.dvc_md5": pointer["md5"]},
            artifacts + [output / name for name in result.artifacts],
        )
        return self._result(manifest, {"reused": False, "dvc": MetadataValue.json(pointer), **result.metadata})

    def link_parent(self, context: AssetExecutionContext) -> MaterializeResult:
        """The parent_checkpoint asset: which parent output and step this experiment starts from."""
        lab = self.lab
        parent = resolve_parent(lab.cfg, lab.store)
        if parent is None:
            raise RuntimeError("this experiment names no parent: set parent.experiment (e.g. [experiment=demo])")
        if parent.manifest is None:
            raise RuntimeError(f"the parent's checkpoint is not materialized: run `lab materialize "
                               f"{' '.join(parent.overrides)}` (`lab materialize` on this experiment does it first)")
        m = parent.manifest
        context.log.info(f"parent {' '.join(parent.overrides)}: checkpoint {m.fingerprint}, step {parent.step}")
        return MaterializeResult(
            data_version=DataVersion(f"{m.content_hash}@{parent.step}"),
            metadata={"parent_experiment": " ".join(parent.overrides), "step": parent.step,
                      "mode": lab.cfg.parent.mode, "fingerprint": m.fingerprint, "content_hash": m.content_hash,
                      "path": f"store/{m.stage}/{m.fingerprint}", "mlflow_run_id": m.mlflow_run_id,
                      "dagster_run_id": m.dagster_run_id},
        )

    def _build(self, context, item: PlanItem, run_id, build) -> tuple[Manifest, StageResult]:
        lab, spec, upstream = self.lab, STAGE_BY_NAME[item.stage], item.upstream or {}
        outcome: dict[str, StageResult] = {}
        parent_step = (item.config or {}).get("parent", {}).get("step")

        def build_into(partial: Path) -> Manifest:
            paths = {name: lab.store.path(m.stage, m.fingerprint) for name, m in upstream.items()}
            run = StageRun(lab.cfg, partial, paths, upstream, context, lab.tracker.tracking_uri, run_id, parent_step)
            outcome["result"] = build(run)
            return Manifest(stage=item.stage, fingerprint=item.fingerprint, content_hash="",
                            code_version=item.code_version, config=item.config,
                            upstream={n: m.content_hash for n, m in upstream.items()},
                            stats=outcome["result"].stats, mlflow_run_id=run_id, dagster_run_id=context.run.run_id)

        manifest = lab.store.commit(item.stage, item.fingerprint, build_into, keep_partial=spec.resumable)
        return manifest, outcome["result"]

    def _tags(self, context: AssetExecutionContext, item: PlanItem) -> dict[str, str]:
        tags = {"dagster.run_id": context.run.run_id, "lab.fingerprint": item.fingerprint,
                "git.revision": git_revision()}
        for name, manifest in (item.upstream or {}).items():
            tags[f"upstream.{name}"] = manifest.content_hash
            tags[f"parent_run.{name}"] = manifest.mlflow_run_id
        if "parent" in (item.config or {}):
            tags["lab.parent_experiment"] = " ".join(self.lab.cfg.parent.experiment)
            tags["lab.parent_step"] = str(item.config["parent"]["step"])
            tags["lab.parent_mode"] = item.config["parent"]["mode"]
        return tags

    def _result(self, manifest: Manifest, extra: dict) -> MaterializeResult:
        metadata = {
            "fingerprint": manifest.fingerprint,
            "content_hash": manifest.content_hash,
            "path": f"store/{manifest.stage}/{manifest.fingerprint}",
            "mlflow_run_id": manifest.mlflow_run_id,
            "upstream": MetadataValue.json(manifest.upstream),
            "stats": MetadataValue.json(json.loads(json.dumps(manifest.stats, default=str))),
            **extra,
        }
        return MaterializeResult(data_version=DataVersion(manifest.content_hash), metadata=metadata)
