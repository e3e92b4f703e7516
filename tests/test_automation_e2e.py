"""The schedule and the asset checks against a real Dagster instance: a daemon's tick re-materializes exactly the
stale assets, and a failing blocking check stops the assets below it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
    build_schedule_context,
)
from tokenizers import Tokenizer, normalizers
from webserver import running_webserver

import assets.tokenizer
from curation.tokenizer import train_tokenizer
from orchestration.automation import EVAL_SENSOR_NAME, SCHEDULE_NAME
from orchestration.cli import main
from orchestration.definitions import build_definitions
from orchestration.experiments import find_experiment, known_experiments, record
from orchestration.graph import build_graph
from orchestration.lab import lab_for
from orchestration.webserver import location_names

pytestmark = pytest.mark.e2e
NAME = "scheduled"
# tiny's curation trunk (named tiny/...), a shorter training run of its own ([scheduled, checkpoint]) and its eval.
OVERRIDES = ["experiment=tiny", "train.steps=20", "train.checkpoint_interval=10"]
STAGES = ("corpus", "filtered", "tokenizer", "mixed", "checkpoint")
FRESH = [("tiny", stage) for stage in STAGES[:-1]] + [(NAME, "checkpoint")]
RUN_TIMEOUT_S = 600

AUTOMATION_QUERY = """
query Automation($repo: RepositorySelector!) {
  schedulesOrError(repositorySelector: $repo) { ... on Schedules { results { name scheduleState { status } } } }
  sensorsOrError(repositorySelector: $repo) { ... on Sensors { results { name sensorState { status } } } }
}
"""
START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) { __typename ... on PythonError { message } }
}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("lab")
    patch = pytest.MonkeyPatch()
    patch.setenv("LAB_HOME", str(home))
    assert main(["materialize", "--name", NAME, *OVERRIDES]) == 0
    yield home
    patch.undo()


def materializations(key: list[str]) -> int:
    return len(DagsterInstance.get().fetch_materializations(AssetKey(key), limit=100).records)


def evaluate_schedule(home: Path):
    definitions = build_definitions(build_graph(known_experiments(home)))
    schedule = definitions.resolve_schedule_def(SCHEDULE_NAME)
    with build_schedule_context(instance=DagsterInstance.get(), scheduled_execution_time=datetime.now(UTC)) as context:
        return schedule.evaluate_tick(context)


def check_evaluations(runs: list[DagsterRun]) -> dict[tuple[str, str], AssetCheckEvaluation]:
    """Each (asset, check)'s evaluation in these runs, newest first as ``get_runs`` lists them (the newest wins)."""
    evaluations = {}
    for run in reversed(runs):
        records = DagsterInstance.get().get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        for entry in records.records:
            evaluation = entry.event_log_entry.dagster_event.event_specific_data
            evaluations[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation
    return evaluations


def test_every_check_passes_on_the_tiny_lineage_and_the_schedule_skips_what_is_fresh(lab: Path) -> None:
    evaluations = check_evaluations(DagsterInstance.get().get_runs())
    assert {(key, e.passed) for (key, _), e in evaluations.items()} == {
        ("tiny/tokenizer", True), ("tiny/filtered", True), ("tiny/mixed", True), (f"{NAME}/checkpoint", True)}
    loss = evaluations[(f"{NAME}/checkpoint", "loss_finite_and_fell")].metadata
    assert loss["final_loss"].value < loss["first_loss"].value
    assert evaluations[("tiny/filtered", "accounts_for_every_document")].metadata["unaccounted"].value == 0
    assert evaluations[("tiny/tokenizer", "round_trips_heldout_text")].metadata["documents"].value > 0
    tick = evaluate_schedule(lab)
    assert not tick.run_requests and "fresh" in tick.skip_message


def start_schedule(web, location: str) -> dict:
    """Switch the schedule on as the UI's toggle does; return the automation the UI lists."""
    repo = {"repositoryLocationName": location, "repositoryName": "__repository__"}
    started = web.graphql(START_SCHEDULE, {"selector": {**repo, "scheduleName": SCHEDULE_NAME}})["startSchedule"]
    assert started["__typename"] == "ScheduleStateResult", started
    listed = web.graphql(AUTOMATION_QUERY, {"repo": repo})
    return {
        **{s["name"]: s["scheduleState"]["status"] for s in listed["schedulesOrError"]["results"]},
        **{s["name"]: s["sensorState"]["status"] for s in listed["sensorsOrError"]["results"]},
    }


def wait_for_scheduled_run(web) -> DagsterRun:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = DagsterInstance.get().get_runs(RunsFilter(tags={"lab/schedule": SCHEDULE_NAME}))
        if runs and runs[0].is_finished:
            return runs[0]
        time.sleep(5)
    daemon_log = (Path(web.log).parent / "daemon.log").read_text(errors="replace").splitlines()[-40:]
    raise TimeoutError(f"no scheduled run finished within {RUN_TIMEOUT_S} s\n" + "\n".join(daemon_log))


def test_a_schedule_tick_rematerializes_only_the_stale_assets(lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = find_experiment(lab, NAME)
    experiment.arms[0].overrides = [*OVERRIDES, "eval.max_tokens_per_domain=2000"]
    record(lab, experiment)  # as `lab` records a changed experiment: its eval is now stale, nothing else
    expected = [[NAME, "eval"], [NAME, "report"]]
    [request] = evaluate_schedule(lab).run_requests
    assert request.asset_selection == [AssetKey(key) for key in expected]
    before = {key: materializations(list(key)) for key in FRESH}
    monkeypatch.setenv("LAB_SCHEDULE_CRON", "* * * * *")  # the daemon's code server reads it: a tick a minute
    with running_webserver(lab, daemon=True) as web:
        [location] = location_names(web.url)
        automation = start_schedule(web, location)
        assert automation == {SCHEDULE_NAME: "RUNNING", EVAL_SENSOR_NAME: "RUNNING",
                              "live_evaluation_sensor": "RUNNING"}
        run = wait_for_scheduled_run(web)
    assert run.status == DagsterRunStatus.SUCCESS, run.status
    # Ticks while the run was in progress skipped: the assets were still stale, but already on their way.
    assert len(DagsterInstance.get().get_runs(RunsFilter(tags={"lab/schedule": SCHEDULE_NAME}))) == 1
    records = DagsterInstance.get().get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    materialized = sorted(r.event_log_entry.dagster_event.asset_key.path for r in records.records)
    assert materialized == sorted(expected)
    assert {key: materializations(list(key)) for key in FRESH} == before  # fresh: not run again
    eval_fingerprint = {item.stage: item.fingerprint for item in lab_for(experiment.arms[0].overrides).plan()}["eval"]
    latest = DagsterInstance.get().fetch_materializations(AssetKey([NAME, "eval"]), limit=1).records[0]
    assert latest.asset_materialization.metadata["fingerprint"].value == eval_fingerprint


def test_a_failing_blocking_check_stops_the_assets_below_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tokenizer change that folds case (a Lowercase normalizer) trains fine, but no longer round-trips text."""

    def lowercasing_tokenizer(cfg, filtered_kept: Path, out_dir: Path) -> dict:
        stats = train_tokenizer(cfg, filtered_kept, out_dir)
        tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.save(str(out_dir / "tokenizer.json"))
        return stats

    monkeypatch.setattr(assets.tokenizer, "train_tokenizer", lowercasing_tokenizer)
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))  # restored afterwards; `lab` points it here
    assert main(["materialize", "experiment=tiny"]) == 1
    assert {stage: materializations(["tiny", stage]) for stage in (*STAGES, "eval")} == {
        "corpus": 1, "filtered": 1, "tokenizer": 1, "mixed": 0, "checkpoint": 0, "eval": 0}
    [run] = DagsterInstance.get().get_runs()
    assert run.status == DagsterRunStatus.FAILURE
    failed = check_evaluations([run])[("tiny/tokenizer", "round_trips_heldout_text")]
    assert not failed.passed and failed.metadata["failures"].value > 0
    assert failed.metadata["first_failure"].value["decoded"] == failed.metadata["first_failure"].value["text"].lower()
