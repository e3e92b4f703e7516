"""The ``lab`` Dagster resource: runs one arm's stage with caching, a lease, tracking and DVC.

Every stage asset calls ``lab.materialize(context, overrides, stage, build, experiment, arm)``. The resource takes
the arm's plan (composed and planned once per process), holds the output's lease while it decides reuse by
fingerprint or builds (so runs sharing the output build it once), opens the MLflow run under the arm's run,
builds into a partial folder committed atomically, versions the output with DVC, and returns the Dagster
``MaterializeResult`` whose data version is the output's content hash.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    DataVersion,
    MaterializeResult,
    MetadataValue,
)

from orchestration.code_identity import module_digests
from orchestration.config import ExperimentConfig, load_experiment
from orchestration.experiments import find_experiment
from orchestration.lab import Lab, lab_for
from orchestration.lineage import STAGE_BY_NAME, PlanItem
from orchestration.store import Manifest, Store
from orchestration.tracking import git_revision


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
    fingerprint: str = ""  # the output's
    store: Store | None = None  # the lab home's store (the evaluation cache lives there)
    arm: tuple[str, str, list[str]] = ("", "", [])  # the experiment, arm and overrides that build this output


@dataclass
class StageResult:
    stats: dict
    # Extra Dagster metadata (tables, markdown) beyond the standard fingerprint/version/MLflow/DVC entries.
    metadata: dict = field(default_factory=dict)
    # Files to attach to the MLflow run (plots, reports), relative to the output folder.
    artifacts: list[str] = field(default_factory=list)
    # Metrics by step for the MLflow run (curves, e.g. downstream accuracy at each checkpoint).
    step_metrics: dict[int, dict[str, float]] = field(default_factory=dict)


def inline_plots(paths: list[Path]) -> MetadataValue:
    """PNG plots inside a markdown metadata value, as Dagster's tutorial does: the UI shows them without a server."""
    return MetadataValue.md("\n\n".join(
        f"![{path.stem}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})" for path in paths))


def placed(cfg: ExperimentConfig, home: Path, tags: Mapping[str, str]) -> ExperimentConfig:
    """``cfg`` with where and how fast of the arm the run is for: the launcher, the parallel layout, and the
    curation executor and workers (its lab/experiment and lab/arm tags; without an arm, a run for several arms of
    the experiment: its first arm's).

    None of these is in a fingerprint, so an output two arms share is one asset, built by the overrides of its
    owner, the first arm that has it (``experiment=tiny``); where it is built is the asking arm's choice
    (``experiment=tiny launcher=slurm``). A run without those tags (from the UI) keeps the owner's.
    """
    if "lab/experiment" not in tags:
        return cfg
    arms = find_experiment(home, tags["lab/experiment"]).arms
    asking = next((arm for arm in arms if arm.name == tags.get("lab/arm", arms[0].name)), None)
    if asking is None:
        return cfg
    where = load_experiment(asking.overrides)
    curation = dataclasses.replace(cfg.filter, executor=where.filter.executor, workers=where.filter.workers)
    return dataclasses.replace(cfg, launcher=where.launcher, parallel=where.parallel, filter=curation)


class LabResource(ConfigurableResource):
    """The lab for Dagster's assets: each asset names the arm (overrides) that builds it."""

    def materialize(
        self, context: AssetExecutionContext, overrides: list[str], stage: str,
        build: Callable[[StageRun], StageResult], experiment: str, arm: str,
    ) -> MaterializeResult:
        lab = lab_for(overrides)
        item = lab.item(stage)
        if item.upstream is None:
            raise RuntimeError(
                f"'{stage}' cannot run yet: {item.reason}. Run `lab materialize` with the same overrides (it "
                f"materializes a parent experiment first), or select the upstream assets too"
            )
        holder = f"dagster run {context.run.run_id} ({experiment}/{arm})"
        with lab.store.lease(stage, item.fingerprint, holder=holder, on_wait=context.log.info):
            found = lab.store.find(stage, item.fingerprint)
            if found is not None:
                context.log.info(f"{stage}: reusing {item.fingerprint} (built by run {found.dagster_run_id})")
                pointer = lab.dvc.pointer(lab.store.path(stage, item.fingerprint))
                return self._result(lab, found, {"reused": True, "dvc": MetadataValue.json(pointer or {})})
            run_id = lab.tracker.start_run(experiment, arm, stage, self._tags(context, lab, item), item.config)
            try:
                manifest, result = self._build(context, lab, item, run_id, build, (experiment, arm, overrides))
                pointer = lab.dvc.add_and_push(lab.store.path(stage, manifest.fingerprint))
            except BaseException:
                lab.tracker.finish_run(run_id, {}, {"lab.error": traceback.format_exc()[-4000:]}, [], "FAILED")
                raise
        output = lab.store.path(stage, manifest.fingerprint)
        for step, metrics in result.step_metrics.items():
            lab.tracker.log_metrics(run_id, metrics, step)
        artifacts = [output / "manifest.json", lab.store.root / pointer["pointer_file"]]
        lab.tracker.finish_run(
            run_id, manifest.stats,
            {"lab.content_hash": manifest.content_hash, "lab.dvc_md5": pointer["md5"]},
            artifacts + [output / name for name in result.artifacts],
        )
        return self._result(lab, manifest, {"reused": False, "dvc": MetadataValue.json(pointer), **result.metadata})

    def _build(self, context, lab: Lab, item: PlanItem, run_id, build, arm) -> tuple[Manifest, StageResult]:
        spec, upstream = STAGE_BY_NAME[item.stage], item.upstream or {}
        outcome: dict[str, StageResult] = {}
        parent_step = (item.config or {}).get("parent", {}).get("step")

        def build_into(partial: Path) -> Manifest:
            paths = {name: lab.store.path(m.stage, m.fingerprint) for name, m in upstream.items()}
            cfg = placed(lab.cfg, lab.home, context.run.tags)
            run = StageRun(cfg, partial, paths, upstream, context, lab.tracker.tracking_uri, run_id, parent_step,
                           item.fingerprint, lab.store, arm)
            outcome["result"] = build(run)
            return Manifest(stage=item.stage, fingerprint=item.fingerprint, content_hash="",
                            code_version=item.code_version, config=item.config,
                            upstream={n: m.content_hash for n, m in upstream.items()},
                            stats=outcome["result"].stats, mlflow_run_id=run_id, dagster_run_id=context.run.run_id,
                            code_modules=module_digests(spec.code_modules))

        manifest = lab.store.commit(item.stage, item.fingerprint, build_into, keep_partial=spec.resumable)
        return manifest, outcome["result"]

    def _tags(self, context: AssetExecutionContext, lab: Lab, item: PlanItem) -> dict[str, str]:
        tags = {"dagster.run_id": context.run.run_id, "lab.fingerprint": item.fingerprint,
                "git.revision": git_revision()}
        for name, manifest in (item.upstream or {}).items():
            tags[f"upstream.{name}"] = manifest.content_hash
            tags[f"parent_run.{name}"] = manifest.mlflow_run_id
        if "parent" in (item.config or {}):
            tags["lab.parent_experiment"] = " ".join(lab.cfg.parent.experiment)
            tags["lab.parent_step"] = str(item.config["parent"]["step"])
            tags["lab.parent_mode"] = item.config["parent"]["mode"]
        return tags

    def _result(self, lab: Lab, manifest: Manifest, extra: dict) -> MaterializeResult:
        metadata = {
            "fingerprint": manifest.fingerprint,
            "content_hash": manifest.content_hash,
            "path": f"store/{manifest.stage}/{manifest.fingerprint}",
            "mlflow_run_id": manifest.mlflow_run_id,
            "mlflow_run": MetadataValue.url(lab.tracker.run_url(manifest.mlflow_run_id)),
            "upstream": MetadataValue.json(manifest.upstream),
            "stats": MetadataValue.json(json.loads(json.dumps(manifest.stats, default=str))),
            **extra,
        }
        return MaterializeResult(data_version=DataVersion(manifest.content_hash), metadata=metadata)
