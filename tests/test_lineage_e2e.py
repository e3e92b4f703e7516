"""The whole lineage on the tiny experiment, through a real Dagster instance, MLflow, DVC and torchrun.

Checks what a researcher relies on: a second run re-materializes nothing; an eval-only override re-runs eval
alone; a filter override re-runs filtered and everything below, nothing above; outputs come back from DVC.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from mlflow.tracking import MlflowClient

from orchestration.cli import main
from orchestration.config import compose_experiment
from orchestration.definitions import build_definitions, versioned_assets
from orchestration.lineage import STAGES, plan
from orchestration.store import Store, content_hash

pytestmark = pytest.mark.e2e
TINY = ["experiment=tiny"]
ASSETS = [spec.name for spec in STAGES]


def materialization_counts(instance: DagsterInstance) -> dict[str, int]:
    return {name: len(instance.fetch_materializations(AssetKey(name), limit=100).records) for name in ASSETS}


def plan_for(overrides: list[str]):
    cfg, _ = compose_experiment(overrides)
    return plan(cfg, Store(Path(LAB_HOME[0]) / "store"))


def actions(overrides: list[str]) -> dict[str, str]:
    return {item.stage: item.action for item in plan_for(overrides)}


LAB_HOME: list[str] = []


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("lab")
    patch = pytest.MonkeyPatch()
    patch.setenv("LAB_HOME", str(home))
    LAB_HOME[:] = [str(home)]
    assert main(["materialize", *TINY]) == 0
    yield home
    patch.undo()


def test_first_run_materializes_every_asset_with_tracking(lab: Path) -> None:
    instance = DagsterInstance.get()
    assert materialization_counts(instance) == dict.fromkeys(ASSETS, 1)
    client = MlflowClient(f"sqlite:///{lab / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    by_stage = {run.data.tags["lab.stage"]: run for run in runs}
    assert sorted(by_stage) == sorted(ASSETS)
    assert by_stage["eval"].data.tags["parent_run.checkpoint"] == by_stage["checkpoint"].info.run_id
    assert all(run.data.tags["dagster.run_id"] == runs[0].data.tags["dagster.run_id"] for run in runs)
    # Training really learned, and logged per step into its own MLflow run.
    train = by_stage["checkpoint"]
    assert train.data.metrics["final_loss"] < 0.8 * train.data.metrics["first_loss"]
    assert len(client.get_metric_history(train.info.run_id, "train/loss")) >= 4
    evaluation = by_stage["eval"].data.metrics
    for domain in ("python", "docs", "license"):
        assert evaluation[f"{domain}.loss"] < 0.8 * evaluation[f"{domain}.initial_loss"]
        assert 0 < evaluation[f"{domain}.bits_per_byte"] < 8


def stale_assets(overrides: list[str]) -> set[str]:
    """What the Dagster UI shows as stale for definitions built with these overrides."""
    resolver = get_stale_status_resolver(DagsterInstance.get(), versioned_assets(overrides))
    return {name for name in ASSETS if resolver.get_status(AssetKey(name)) != StaleStatus.FRESH}


def test_dagster_staleness_matches_the_plan(lab: Path) -> None:
    """Dagster flags the asset whose config changed (its descendants follow once it has a new data version)."""
    assert stale_assets(TINY) == set()
    assert stale_assets([*TINY, "eval.seq_len=32"]) == {"eval"}
    assert stale_assets([*TINY, "tokenizer.vocab_size=600"]) == {"tokenizer"}
    assert stale_assets([*TINY, "filter.workers=2"]) == set()  # speed only: not part of any identity


def test_second_run_reuses_everything(lab: Path) -> None:
    instance = DagsterInstance.get()
    runs_before = len(instance.get_runs())
    assert set(actions(TINY).values()) == {"reuse"}
    assert main(["materialize", *TINY]) == 0
    assert len(instance.get_runs()) == runs_before
    assert materialization_counts(instance) == dict.fromkeys(ASSETS, 1)


def test_eval_override_reruns_eval_alone(lab: Path) -> None:
    overrides = [*TINY, "eval.max_tokens_per_domain=2000"]
    assert actions(overrides) == {**dict.fromkeys(ASSETS, "reuse"), "eval": "run"}
    assert main(["materialize", *overrides]) == 0
    assert materialization_counts(DagsterInstance.get()) == {**dict.fromkeys(ASSETS, 1), "eval": 2}


def test_filter_override_reruns_filtered_and_below(lab: Path) -> None:
    before = materialization_counts(DagsterInstance.get())
    overrides = [*TINY, "filter.prose.min_doc_words=150"]
    assert actions(overrides) == {**dict.fromkeys(ASSETS, "run"), "corpus": "reuse"}
    assert main(["materialize", *overrides]) == 0
    after = materialization_counts(DagsterInstance.get())
    assert after["corpus"] == before["corpus"]
    assert all(after[name] == before[name] + 1 for name in ASSETS[1:])


def test_launchpad_overrides_through_the_lineage_job(lab: Path) -> None:
    """The Dagster launchpad's path: the `lineage` job with override strings in the `lab` resource config."""
    instance = DagsterInstance.get()
    before = materialization_counts(instance)["corpus"]
    overrides = [*TINY, "corpus.domains.license.max_docs=10"]
    job = build_definitions(TINY).resolve_job_def("lineage")
    result = job.execute_in_process(
        run_config={"resources": {"lab": {"config": {"overrides": overrides}}}},
        instance=instance, asset_selection=[AssetKey("corpus")],
    )
    assert result.success
    assert materialization_counts(instance)["corpus"] == before + 1
    metadata = result.asset_materializations_for_node("corpus")[0].metadata
    assert metadata["fingerprint"].value == {i.stage: i.fingerprint for i in plan_for(overrides)}["corpus"]
    assert metadata["stats"].value["domains"]["license"]["documents"] == 10


def test_dvc_pull_restores_recorded_bytes(lab: Path) -> None:
    record = DagsterInstance.get().fetch_materializations(AssetKey("mixed"), limit=1).records[0]
    metadata = record.asset_materialization.metadata
    output = lab / metadata["path"].value
    recorded_hash = metadata["content_hash"].value
    assert content_hash(output) == recorded_hash
    shutil.rmtree(output)
    shutil.rmtree(lab / "store" / ".dvc" / "cache")
    assert main(["pull", *TINY]) == 0
    assert content_hash(output) == recorded_hash
    assert json.loads((output / "manifest.json").read_text())["content_hash"] == recorded_hash
