"""The whole lineage on the tiny experiment, through a real Dagster instance, MLflow, DVC and torchrun.

Checks what a researcher relies on: a second run re-materializes nothing; an eval-only override re-runs eval
alone; a filter override re-runs filtered and everything below, nothing above; outputs come back from DVC.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from mlflow.tracking import MlflowClient

from orchestration.cli import main
from orchestration.config import load_experiment
from orchestration.definitions import build_definitions
from orchestration.experiments import (
    Arm,
    Experiment,
    conf_experiments,
    default_name,
    find_experiment,
    known_experiments,
)
from orchestration.graph import build_graph
from orchestration.lineage import STAGES, plan
from orchestration.resources import LabResource
from orchestration.store import Store, content_hash
from training.outputs import step_log

pytestmark = pytest.mark.e2e
TINY = ["experiment=tiny"]
ASSETS = [spec.name for spec in STAGES]


def materialization_counts(instance: DagsterInstance, prefix: str = "tiny") -> dict[str, int]:
    return {name: len(instance.fetch_materializations(AssetKey([prefix, name]), limit=100).records)
            for name in ASSETS}


def plan_for(overrides: list[str]):
    return plan(load_experiment(overrides), Store(Path(LAB_HOME[0]) / "store"))


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
    everything = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    runs = [run for run in everything if run.data.tags.get("lab.stage") in ASSETS]
    by_stage = {run.data.tags["lab.stage"]: run for run in runs}
    assert sorted(by_stage) == sorted(ASSETS)
    assert by_stage["eval"].data.tags["parent_run.checkpoint"] == by_stage["checkpoint"].info.run_id
    assert all(run.data.tags["dagster.run_id"] == runs[0].data.tags["dagster.run_id"] for run in runs)
    # Stage runs are nested under the arm's run, which carries the arm's results for MLflow's compare view.
    arm_run = next(run for run in everything if run.data.tags.get("lab.kind") == "arm")
    assert {run.data.tags["mlflow.parentRunId"] for run in runs} == {arm_run.info.run_id}
    assert arm_run.data.metrics["final_val_loss"] < by_stage["eval"].data.metrics["docs.initial_loss"]
    # Training really learned, and logged per step into its own MLflow run.
    train = by_stage["checkpoint"]
    assert train.data.metrics["final_loss"] < 0.8 * train.data.metrics["first_loss"]
    assert len(client.get_metric_history(train.info.run_id, "train/loss")) >= 4
    evaluation = by_stage["eval"].data.metrics
    for domain in ("python", "docs", "license"):
        assert evaluation[f"{domain}.loss"] < 0.8 * evaluation[f"{domain}.initial_loss"]
        assert 0 < evaluation[f"{domain}.bits_per_byte"] < 8


def load_definitions(home: Path):
    return build_definitions(build_graph(known_experiments(home)))


def tiny_as(overrides: list[str]) -> list[Experiment]:
    """The known experiments with `tiny`'s config changed to these overrides (as if conf/experiment/tiny.yaml was)."""
    return [Experiment("tiny", [Arm("tiny", overrides)], "conf") if e.name == "tiny" else e
            for e in conf_experiments()]


def stale_assets(overrides: list[str]) -> set[str]:
    """What the Dagster UI shows as stale for the tiny experiment, were its config these overrides."""
    assets = build_definitions(build_graph(tiny_as(overrides))).assets
    resolver = get_stale_status_resolver(DagsterInstance.get(), list(assets))
    return {name for name in ASSETS if resolver.get_status(AssetKey(["tiny", name])) != StaleStatus.FRESH}


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
    """A new experiment shares tiny's assets up to where its config differs: only its eval is its own."""
    overrides = [*TINY, "eval.max_tokens_per_domain=2000"]
    assert actions(overrides) == {**dict.fromkeys(ASSETS, "reuse"), "eval": "run"}
    assert main(["materialize", *overrides]) == 0
    instance = DagsterInstance.get()
    assert materialization_counts(instance) == dict.fromkeys(ASSETS, 1)
    assert materialization_counts(instance, default_name(overrides, "tiny")) == {
        **dict.fromkeys(ASSETS, 0), "eval": 1}


def test_filter_override_reruns_filtered_and_below(lab: Path) -> None:
    before = materialization_counts(DagsterInstance.get())
    overrides = [*TINY, "filter.prose.min_doc_words=150"]
    assert actions(overrides) == {**dict.fromkeys(ASSETS, "run"), "corpus": "reuse"}
    assert main(["materialize", *overrides]) == 0
    assert materialization_counts(DagsterInstance.get()) == before  # tiny's own assets are untouched
    assert materialization_counts(DagsterInstance.get(), default_name(overrides, "tiny")) == {
        **dict.fromkeys(ASSETS, 1), "corpus": 0}  # corpus is tiny's, shared


def test_launchpad_launches_an_experiment_and_runs_its_job(lab: Path) -> None:
    """The launchpad's two ways: the `launch` job with override strings, and an experiment's own job."""
    instance = DagsterInstance.get()
    overrides = [*TINY, "eval.batch_size=4"]
    defs = build_definitions(build_graph(conf_experiments()))
    launched = defs.resolve_job_def("launch").execute_in_process(
        run_config={"ops": {"lab_materialize": {"config": {"overrides": overrides, "name": "from_launchpad"}}}},
        instance=instance)
    assert launched.success
    experiment = find_experiment(lab, "from_launchpad")
    assert experiment.arms[0].overrides == overrides
    record = instance.fetch_materializations(AssetKey(["from_launchpad", "eval"]), limit=1).records[0]
    assert record.asset_materialization.metadata["fingerprint"].value == {
        i.stage: i.fingerprint for i in plan_for(overrides)}["eval"]
    # tiny's job materializes its arm and report; everything is fresh, so every step reuses.
    job = defs.resolve_job_def("experiment_tiny")
    result = job.execute_in_process(instance=instance, resources={"lab": LabResource()})
    assert result.success
    metadata = result.asset_materializations_for_node("tiny__eval")[0].metadata
    assert metadata["reused"].value is True


def test_dvc_pull_restores_recorded_bytes(lab: Path) -> None:
    record = DagsterInstance.get().fetch_materializations(AssetKey(["tiny", "mixed"]), limit=1).records[0]
    metadata = record.asset_materialization.metadata
    output = lab / metadata["path"].value
    recorded_hash = metadata["content_hash"].value
    assert content_hash(output) == recorded_hash
    shutil.rmtree(output)
    shutil.rmtree(lab / "store" / ".dvc" / "cache")
    assert main(["pull", *TINY]) == 0
    assert content_hash(output) == recorded_hash
    assert json.loads((output / "manifest.json").read_text())["content_hash"] == recorded_hash


def checkpoint_manifest(overrides: list[str]):
    return {item.stage: item for item in plan_for(overrides)}["checkpoint"].manifest


CPT = [*TINY, 'parent.experiment=["experiment=tiny"]', "mixture.weights={docs: 1.0, python: 0, license: 0}",
       "mixture.replay.fraction=0.25", "+mixture.replay.weights={python: 1.0}", "mixture.train_tokens=20480",
       "train.steps=20", "train.schedule=cosine", "train.warmup_steps=4", "train.checkpoint_interval=10",
       "train.checkpoint_early=10"]
BRANCH = [*TINY, 'parent.experiment=["experiment=tiny"]', "parent.step=40", "parent.mode=branch", "train.steps=70",
          "train.schedule=constant", "train.cooldown_steps=14"]


def test_continual_pretraining_starts_from_the_parent(lab: Path) -> None:
    parent = checkpoint_manifest(TINY)
    assert main(["materialize", *CPT]) == 0
    # In the graph, the child's checkpoint and eval hang off the parent's checkpoint asset.
    name = default_name(CPT, "tiny")
    specs = {spec.key: spec for a in load_definitions(lab).assets for spec in a.specs}
    for stage in ("checkpoint", "eval"):
        assert AssetKey(["tiny", "checkpoint"]) in {dep.asset_key for dep in specs[AssetKey([name, stage])].deps}
    child = checkpoint_manifest(CPT)
    assert child.upstream["parent"] == parent.content_hash and child.config["parent"]["step"] == 80
    client = MlflowClient(f"sqlite:///{lab / 'mlflow.db'}")
    tags = client.get_run(child.mlflow_run_id).data.tags
    assert tags["parent_run.parent"] == parent.mlflow_run_id
    assert (tags["lab.parent_step"], tags["lab.parent_mode"]) == ("80", "weights")
    # It starts from the parent's weights: far below the untrained start of the parent's own curve.
    assert child.stats["first_loss"] < 0.8 * parent.stats["first_loss"]
    # eval's curve starts at the parent's weights: on the same held-out tokens, the parent's final numbers.
    child_eval = json.loads((lab / "store" / "eval" / {i.stage: i for i in plan_for(CPT)}["eval"].fingerprint
                             / "eval.json").read_text())
    parent_eval = {i.stage: i for i in plan_for(TINY)}["eval"].manifest.stats
    assert child_eval["by_step"]["0"]["docs"]["loss"] == pytest.approx(parent_eval["docs"]["loss"], rel=1e-6)
    ledger = json.loads((lab / "store" / "checkpoint" / child.fingerprint / "checkpoint_ledger.json").read_text())
    assert ledger["20"]["replay"]["python"] > 0 and set(ledger["20"]["phases"]["main"]) == {"docs"}
    # Dense early checkpoints (train.checkpoint_early=10), and the forgetting on the parent's domains at each.
    assert child.stats["checkpoint_steps"] == [1, 2, 4, 8, 10, 20]
    eval_dir = lab / "store" / "eval" / {i.stage: i for i in plan_for(CPT)}["eval"].fingerprint
    forgetting = json.loads((eval_dir / "forgetting.json").read_text())
    assert forgetting["parent_domains"] == ["docs", "license", "python"]
    table = forgetting["forgetting"]
    assert table["start_step"] == 0 and table["steps"] == [1, 2, 4, 8, 10, 20]
    assert sorted([*table["domains"], *table["without_heldout"]]) == ["docs", "license", "python"]
    python = table["domains"]["python"]
    assert python["start_loss"] == child_eval["by_step"]["0"]["python"]["loss"]
    assert python["loss_by_step"]["20"] == child_eval["by_step"]["20"]["python"]["loss"]
    assert (eval_dir / "report" / "forgetting.png").is_file()
    # The chain's transfer matrix: the parent's row (tiny, from its untrained start to step 80), then the child's.
    parent_row, row = forgetting["transfer"]
    assert parent_row["stage"] == "tiny" and parent_row["change"]["python"] < 0
    assert row["trained"] == ["docs", "python"] and row["change"]["docs"] < 0  # docs was learned
    assert (eval_dir / "report" / "transfer.png").is_file()


def test_wsd_branch_continues_the_parent_run(lab: Path) -> None:
    assert main(["materialize", *BRANCH]) == 0
    parent, child = checkpoint_manifest(TINY), checkpoint_manifest(BRANCH)
    assert child.upstream["parent"] == parent.content_hash and child.config["parent"]["step"] == 40
    assert MlflowClient(f"sqlite:///{lab / 'mlflow.db'}").get_run(child.mlflow_run_id).data.tags[
        "lab.parent_step"] == "40"
    parent_steps = step_log(lab / "store" / "checkpoint" / parent.fingerprint)
    child_steps = step_log(lab / "store" / "checkpoint" / child.fingerprint)
    assert min(child_steps) > 40 and max(child_steps) == 70
    # Until the branch's cooldown (step 56) it is the parent run, step for step: same data, state and LR.
    assert child_steps[50]["loss"] == parent_steps[50]["loss"]
    assert child_steps[70]["lr"] < parent_steps[70]["lr"]


def test_killed_training_rank_resumes_through_the_retry(lab: Path) -> None:
    """SIGKILL one training rank mid-run: the asset's retry resumes from the last checkpoint, losses unchanged."""
    overrides = [*TINY, "train.seed=1"]
    fingerprint = {item.stage: item for item in plan_for(overrides)}["checkpoint"].fingerprint
    partial = lab / "store" / "checkpoint" / f".partial-{fingerprint}"
    env = {**os.environ, "LAB_HOME": str(lab)}
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "materialize", *overrides], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while 50 not in step_log(partial):  # step 50 is logged after the step-40 checkpoint
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.1)
    rank1 = [p for p in psutil.Process(proc.pid).children(recursive=True)
             if "training.train" in " ".join(p.cmdline()) and p.environ().get("RANK") == "1"]
    assert len(rank1) == 1
    rank1[0].send_signal(signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    manifest = checkpoint_manifest(overrides)
    retries = DagsterInstance.get().all_logs(manifest.dagster_run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert [event.step_key for event in retries] == [f"{default_name(overrides, 'tiny')}__checkpoint"]
    lines = [json.loads(line) for line in
             (lab / "store" / "checkpoint" / manifest.fingerprint / "train_steps.jsonl").read_text().splitlines()]
    first_try = {row["step"]: row["loss"] for row in lines[: [r["step"] for r in lines].index(50) + 1]}
    resumed = {row["step"]: row["loss"] for row in lines[len(first_try):]}
    assert min(resumed) == 50 and max(resumed) == 80  # resumed after the step-40 checkpoint, not from scratch
    assert resumed[50] == first_try[50]  # the same state and data: bitwise the same loss
