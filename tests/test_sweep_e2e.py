"""A sweep of 2 docs weights x 2 seeds on the tiny experiment, through `lab materialize -m`, a real Dagster instance,
MLflow and a real `dagster-webserver`: shared work once, every arm in the asset graph, one report, and Dagster's
own staleness agreeing with `lab plan` when one arm changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from mlflow.tracking import MlflowClient
from webserver import running_webserver

from orchestration.cli import as_experiment, main
from orchestration.definitions import build_definitions
from orchestration.experiments import find_experiment, known_experiments, record
from orchestration.graph import build_graph
from orchestration.lab import lab_for
from orchestration.webserver import reload_running_webserver

pytestmark = pytest.mark.e2e
NAME = "docs_sweep"
SWEEP = ["experiment=tiny", "train.steps=20", "train.checkpoint_interval=10", "mixture.weights.docs=0.1,0.5",
         "train.seed=0,1"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("lab")
    patch = pytest.MonkeyPatch()
    patch.setenv("LAB_HOME", str(home))
    assert main(["materialize", "-m", "--name", NAME, *SWEEP]) == 0
    yield home
    patch.undo()


def materializations(key: list[str]) -> list:
    return DagsterInstance.get().fetch_materializations(AssetKey(key), limit=100).records


def test_shared_work_is_materialized_once_and_each_arm_has_its_own(lab: Path) -> None:
    graph = build_graph(known_experiments(lab))
    arms = graph.experiment_arms(NAME)
    assert len(arms) == 4
    for stage in ("corpus", "filtered", "tokenizer"):  # the sweep changes nothing before the mixture
        assert {tuple(arm.paths[stage]) for arm in arms} == {("tiny", stage)}
        assert len(materializations(["tiny", stage])) == 1
    # One mixture per docs weight, shared by its two seeds; one training run per arm.
    assert len({tuple(arm.paths["mixed"]) for arm in arms}) == 2
    for arm in arms:
        assert len(materializations(arm.paths["mixed"])) == 1
        assert len(materializations(arm.paths["checkpoint"])) == 1
    runs = DagsterInstance.get().get_runs()
    assert {run.tags.get("lab/arm") for run in runs} >= {arm.arm.name for arm in arms}
    assert {run.tags["lab/experiment"] for run in runs} == {NAME}


def test_the_asset_graph_of_the_webserver_holds_every_arm_and_the_parent_edges(lab: Path) -> None:
    graph = build_graph(known_experiments(lab))
    with running_webserver(lab) as web:
        keys = {tuple(key) for key in web.asset_keys()}
        deps = web.asset_dependencies()
        # A new experiment recorded by `lab` appears after the reload `lab` triggers: no restart.
        record(lab, as_experiment(["experiment=tiny", "train.lr=0.01"], False, "new_arm", ""))
        assert ("new_arm", "checkpoint") not in keys
        assert reload_running_webserver(lab)
        assert ["new_arm", "checkpoint"] in web.asset_keys()
    for arm in graph.experiment_arms(NAME):
        assert {tuple(path) for path in arm.paths.values()} <= keys
        assert tuple(arm.paths["checkpoint"]) in deps[tuple(arm.paths["eval"])]
    assert deps[(NAME, "report")] and all(key[-1] in ("checkpoint", "eval") for key in deps[(NAME, "report")])
    # Continual pretraining and the WSD branch hang off the demo's own checkpoint asset.
    assert ("demo", "checkpoint") in deps[("cpt_docs", "checkpoint")]
    assert ("demo", "checkpoint") in deps[("wsd_branch", "checkpoint")]


def test_the_report_holds_plots_and_the_table_and_mlflow_lines_the_arms_up(lab: Path) -> None:
    [record_] = materializations([NAME, "report"])
    metadata = record_.asset_materialization.metadata
    arms = [arm.name for arm in find_experiment(lab, NAME).arms]
    assert all(f"| {arm} |" in metadata["table"].value for arm in arms)  # a row per arm
    assert metadata["plots"].value.count("data:image/png;base64,") >= 4
    client = MlflowClient(f"sqlite:///{lab / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(NAME)
    arm_runs = client.search_runs([experiment.experiment_id], "tags.`lab.kind` = 'arm'")
    assert sorted(run.info.run_name for run in arm_runs) == sorted(arms)
    for run in arm_runs:  # what the compare view charts: the swept value against the result
        assert float(run.data.params["mixture.weights.docs"]) in (0.1, 0.5)
        assert 0 < run.data.metrics["final_val_loss"] < 8
    stage_runs = client.search_runs([experiment.experiment_id], "tags.`lab.stage` = 'checkpoint'")
    assert {run.data.tags["mlflow.parentRunId"] for run in stage_runs} == {run.info.run_id for run in arm_runs}


def test_lab_experiments_and_lab_report_say_where_things_stand(lab: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["experiments"]) == 0
    listing = capsys.readouterr().out
    sweep = listing[listing.index(f"{NAME}  (recorded by lab, 4 arms)"):]
    assert sweep.count("materialized") == 4
    assert "not materialized" in listing[listing.index("demo  (conf/experiment"):]  # nothing of the demo ran
    assert main(["report", NAME]) == 0
    report = capsys.readouterr().out
    assert all(f"| {arm.name} |" in report for arm in find_experiment(lab, NAME).arms)
    assert "final_by_setting.png" in report


def test_changing_one_arm_marks_exactly_its_assets_stale(lab: Path) -> None:
    experiment = find_experiment(lab, NAME)
    changed = experiment.arms[-1]
    changed.overrides = [*changed.overrides, "eval.max_tokens_per_domain=2000"]
    record(lab, experiment)
    graph = build_graph(known_experiments(lab))
    assets = list(build_definitions(graph).assets)
    resolver = get_stale_status_resolver(DagsterInstance.get(), assets)
    stale = {key for a in assets for key in a.keys if resolver.get_status(key) == StaleStatus.STALE}
    assert stale == {AssetKey(graph.arm(NAME, changed.name).paths["eval"])}
    # `lab plan` agrees: that arm's eval re-runs, for that reason, and nothing else of any arm.
    to_run = {(arm.name, item.stage): item.reason for arm in experiment.arms
              for item in lab_for(arm.overrides).plan() if item.action == "run"}
    assert list(to_run) == [(changed.name, "eval")]
    assert "eval.max_tokens_per_domain" in to_run[(changed.name, "eval")]
