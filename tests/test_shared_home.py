"""Services of one lab home used by several processes at once: MLflow on SQLite, DVC in the store, Dagster."""

from __future__ import annotations

import multiprocessing
import shutil
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from orchestration.tracking import Tracker
from orchestration.versioning import DvcStore

SPAWN = multiprocessing.get_context("spawn")
STEPS = 30


def track_one_run(home: str, start, errors) -> None:
    """One `lab materialize` as MLflow sees it: a tracker on the shared home, one run with per-step metrics."""
    try:
        start.wait()
        tracker = Tracker(f"sqlite:///{home}/mlflow.db", Path(home, "mlartifacts"))
        run_id = tracker.start_run("shared", "arm", "checkpoint", {"lab.fingerprint": "f"}, {"train": {"lr": 0.1}})
        for step in range(STEPS):  # as a training rank logs: one small batch per step
            tracker.client.log_batch(run_id, metrics=[Metric("loss", 1.0 / (step + 1), int(time.time() * 1000), step)])
        tracker.finish_run(run_id, {"final_loss": 0.5}, {"lab.content_hash": "h"}, [])
    except Exception as error:  # reported to the test, which shows it
        errors.put(f"{type(error).__name__}: {error}")
        raise


def test_trackers_start_together_on_a_fresh_home(tmp_path: Path) -> None:
    start, errors = SPAWN.Barrier(4), SPAWN.Queue()
    workers = [SPAWN.Process(target=track_one_run, args=(str(tmp_path), start, errors)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert errors.empty(), errors.get()
    assert [worker.exitcode for worker in workers] == [0] * 4

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("shared").experiment_id
    runs = client.search_runs([experiment], "tags.`lab.stage` = 'checkpoint'")
    assert len(runs) == 4 and {run.info.status for run in runs} == {"FINISHED"}
    # The arm's run is created once, whichever process came first; the four stage runs are nested under it.
    [arm] = client.search_runs([experiment], "tags.`lab.kind` = 'arm'")
    assert {run.data.tags["mlflow.parentRunId"] for run in runs} == {arm.info.run_id}
    assert all(len(client.get_metric_history(run.info.run_id, "loss")) == STEPS for run in runs)


def version_one_output(store_root: str, remote: str, name: str, start, errors) -> None:
    try:
        dvc = DvcStore(Path(store_root), remote, {})
        output = Path(store_root, "stage", name)
        output.mkdir(parents=True)
        (output / "data.bin").write_bytes(name.encode() * 1000)
        start.wait()
        dvc.add_and_push(output)
    except Exception as error:
        errors.put(f"{type(error).__name__}: {error}")
        raise


def test_dvc_versions_outputs_of_runs_at_once_on_a_fresh_store(tmp_path: Path) -> None:
    store, remote, names = tmp_path / "store", str(tmp_path / "remote"), ["a", "b", "c"]
    start, errors = SPAWN.Barrier(len(names)), SPAWN.Queue()
    workers = [SPAWN.Process(target=version_one_output, args=(str(store), remote, name, start, errors))
               for name in names]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert errors.empty(), errors.get()
    dvc = DvcStore(store, remote, {})
    assert all(dvc.pointer(store / "stage" / name) is not None for name in names)
    shutil.rmtree(store / ".dvc" / "cache")
    for name in names:
        shutil.rmtree(store / "stage" / name)
        dvc.pull(f"stage/{name}.dvc")
        assert (store / "stage" / name / "data.bin").read_bytes() == name.encode() * 1000


def materialize_in_shared_instance(home: str, start, errors) -> None:
    """One `lab materialize` as Dagster sees it: the lab home's instance, one in-process run."""
    try:
        import dagster

        from orchestration.dagster_home import open_instance

        @dagster.asset
        def answer() -> int:
            return 42

        start.wait()
        assert dagster.materialize([answer], instance=open_instance(Path(home))).success
    except Exception as error:
        errors.put(f"{type(error).__name__}: {error}")
        raise


def test_dagster_runs_start_together_on_a_fresh_home(tmp_path: Path) -> None:
    start, errors = SPAWN.Barrier(3), SPAWN.Queue()
    workers = [SPAWN.Process(target=materialize_in_shared_instance, args=(str(tmp_path), start, errors))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert errors.empty(), errors.get()
    from orchestration.dagster_home import open_instance

    runs = open_instance(tmp_path).get_runs()
    assert len(runs) == 3 and all(run.is_success for run in runs)
