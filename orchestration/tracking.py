"""MLflow tracking: one run per materialization, linked to its Dagster run, fingerprint, git revision and parents.

Uses ``MlflowClient`` with explicit run ids (no global active run), so the training processes that a stage launches
can log into the same run.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from orchestration.config import REPO_ROOT
from orchestration.locks import file_lock, initialize_once
from orchestration.store import flatten

# MLflow's limits for one log_batch call.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000


def git_revision() -> str:
    """The commit the code ran at, with '-dirty' when the work tree differs from it."""
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                  text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{revision}-dirty" if dirty else revision


def numeric_leaves(stats: dict) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(stats).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for other stores (a server, PostgreSQL)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?")[0])


class Tracker:
    """One MLflow experiment per lab experiment; in it a run per arm, and each stage's run nested under its arm's.

    MLflow's compare view then lines the arms up: each arm run carries the arm's overrides as params and its
    results as metrics (see ``log_arm``); a stage shared by several arms is nested under the arm that built it.
    """

    def __init__(self, tracking_uri: str, artifact_root: Path | str, ui_url: str = "", lock_dir: Path | None = None):
        """``artifact_root``: a folder, or a URL such as s3://bucket/prefix/mlflow-artifacts (then ``lock_dir``, a
        local folder, holds the lock that ``arm_run`` takes)."""
        database = sqlite_database(tracking_uri)
        if database is not None:
            # A new client creates and migrates a SQLite store that is not there yet; two processes doing that at
            # once break it for good ("table _alembic_tmp_... already exists"). So the first client on a lab home
            # does it alone, under a lock; later processes see the marker and skip the lock.
            marker = database.with_name(database.name + ".initialized")
            initialize_once(marker, lambda: MlflowClient(tracking_uri), creates=database)
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.lock_dir = lock_dir or Path(artifact_root)
        self.ui_url = ui_url.rstrip("/")

    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self.artifact_location(name))
        except MlflowException as error:  # another process created it since we looked
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def artifact_location(self, experiment: str) -> str:
        if isinstance(self.artifact_root, Path):
            return (self.artifact_root / experiment).as_uri()
        return f"{self.artifact_root.rstrip('/')}/{experiment}"

    def arm_run(self, experiment: str, arm: str) -> str:
        """The arm's run in the experiment, created on first use (under a lock: runs of one arm start together)."""
        experiment_id = self.experiment_id(experiment)
        query = f"tags.`lab.arm` = '{arm}' and tags.`lab.kind` = 'arm'"
        with file_lock(self.lock_dir / ".arm-runs.lock"):
            found = self.client.search_runs([experiment_id], query, max_results=1)
            if found:
                return found[0].info.run_id
            run = self.client.create_run(experiment_id, run_name=arm, tags={"lab.arm": arm, "lab.kind": "arm",
                                                                            "lab.experiment": experiment})
            return run.info.run_id

    def start_run(self, experiment: str, arm: str, stage: str, tags: dict[str, str], params: dict) -> str:
        parent = self.arm_run(experiment, arm)
        tags = {"lab.stage": stage, "lab.experiment": experiment, "lab.arm": arm, "mlflow.parentRunId": parent,
                **tags}
        run = self.client.create_run(self.experiment_id(experiment), run_name=f"{arm}: {stage}", tags=tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict) -> None:
        flat = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in flatten(params).items()]
        for start in range(0, len(flat), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=flat[start:start + MAX_PARAMS_PER_BATCH])

    def log_arm(self, experiment: str, arm: str, params: dict, results: dict) -> str:
        """The arm's overrides as params and its results as metrics, for MLflow's compare view."""
        run_id = self.arm_run(experiment, arm)
        known = self.client.get_run(run_id).data.params
        self.log_params(run_id, {k: v for k, v in params.items() if k not in known})
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in numeric_leaves(results).items()]
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])
        return run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """Metrics at a training step, e.g. the validation losses of a checkpoint while its training runs."""
        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(rows), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=rows[start:start + MAX_METRICS_PER_BATCH])

    def run_url(self, run_id: str) -> str:
        """The run's page in the MLflow UI."""
        if not run_id:
            return self.ui_url
        experiment_id = self.client.get_run(run_id).info.experiment_id
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def finish_run(self, run_id: str, stats: dict, tags: dict[str, str], artifacts: list[Path],
                   status: str = "FINISHED") -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in numeric_leaves(stats).items()]
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])
        for artifact in artifacts:
            self.client.log_artifact(run_id, str(artifact))
        self.client.set_terminated(run_id, status)
