"""Live evaluation for real: a `dagster-daemon` evaluates every checkpoint of a running training exactly once, also
when the daemon crashes and comes back mid-training; the final `eval` computes none of those again; and an eval
killed part-way resumes without recomputing the checkpoints it had finished."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from mlflow import MlflowClient

from orchestration.dagster_home import prepare_dagster_home
from orchestration.eval_cache import CACHE_DIR
from orchestration.live_eval import checkpoint_assets
from orchestration.store import Store
from tests.webserver import running_daemon

pytestmark = pytest.mark.e2e
# One training rank, held (SIGSTOP) at its first saved checkpoint while the daemon evaluates it: what the test
# observes does not depend on how loaded the machine is.
ARM = ["experiment=tiny", "parallel.nproc_per_node=1", "train.steps=160", "train.checkpoint_interval=40"]
CURVE = [0, 40, 80, 120, 160]  # the untrained start and every saved checkpoint
HELD_AT = CURVE[1]
COMPUTED = re.compile(r"eval step (\d+): computed")
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def lab(home: Path, *args: str, log: Path) -> subprocess.Popen:
    with log.open("w") as output:
        return subprocess.Popen([sys.executable, "-m", "orchestration.cli", "materialize", *args],
                                env={**os.environ, "LAB_HOME": str(home)}, stdout=output, stderr=subprocess.STDOUT)


def live_runs(instance: DagsterInstance) -> list:
    """The live evaluation runs the sensor launched (a run's automatic retry, dagster.yaml's run_retries, aside)."""
    return [run for run in instance.get_runs(RunsFilter(job_name="live_evaluation"))
            if "dagster/parent_run_id" not in run.tags]


def final_status(instance: DagsterInstance, run) -> DagsterRunStatus:
    """The status of the run's last attempt (itself, or its latest retry)."""
    retries = instance.get_runs(RunsFilter(tags={"dagster/root_run_id": run.run_id}))
    return retries[0].status if retries else run.status


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(poll_s)


def run_log(instance: DagsterInstance, run_id: str) -> str:
    return "\n".join(entry.user_message for entry in instance.all_logs(run_id))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A training run evaluated live by a daemon that crashes and restarts mid-training; returns the lab home and
    the output of `lab materialize`.

    How fast the live runs are against the training depends on the machine, so the test holds the training where
    it needs it to be running: its rank is stopped (SIGSTOP) once its first checkpoint has been reported, and
    continued only after a first live evaluation has computed a point and the daemon has crashed and come back."""
    home = tmp_path_factory.mktemp("lab")
    patch = pytest.MonkeyPatch()
    patch.setenv("LAB_HOME", str(home))
    prepare_dagster_home(home)
    instance = DagsterInstance.get()
    log = home / "materialize.log"
    with running_daemon(home) as daemon:
        # The sensor's first tick starts after the history; a training reported before it would be history too.
        wait_for(lambda: daemon.log.is_file() and "Checking for new runs for sensor: live_evaluation_sensor"
                 in daemon.log.read_text(errors="replace"), 600, "the sensor's first tick")
        training = lab(home, *ARM, log=log)
        wait_for(lambda: HELD_AT in reported_steps(instance) or training.poll() is not None, 600,
                 f"the checkpoint at step {HELD_AT}", poll_s=0.1)
        held = training_ranks(home)
        assert held and training.poll() is None, "training ended before it could be held"
        for rank in held:
            rank.suspend()
        try:
            wait_for(lambda: any(COMPUTED.search(run_log(instance, run.run_id)) for run in live_runs(instance)
                                 if run.status == DagsterRunStatus.SUCCESS), 600, "a first live evaluation")
            daemon.crash()
            time.sleep(3)
            daemon.start()
        finally:
            for rank in held:
                rank.resume()
        assert training.wait(timeout=900) == 0, log.read_text()[-3000:]
        wait_for(lambda: len(live_runs(instance)) == len(CURVE)
                 and all(final_status(instance, run) in FINISHED for run in live_runs(instance)), 600,
                 "every live evaluation")
    yield home, log.read_text()
    patch.undo()


def reported_steps(instance: DagsterInstance) -> set[int]:
    """The checkpoint steps the training has reported (as observations of its checkpoint asset) so far."""
    steps = set()
    for key in checkpoint_assets(instance):
        for record in instance.fetch_observations(key, limit=100).records:
            step = record.asset_observation.metadata.get("checkpoint_step")
            steps |= {step.value} if step else set()
    return steps


def training_ranks(home: Path) -> list[psutil.Process]:
    """The training's ranks (torchrun's children running training.train) started for the lab home ``home``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        try:
            if ("training.train" in cmdline and "torch.distributed.run" not in cmdline
                    and process.environ().get("LAB_HOME") == str(home)):
                found.append(process)
        except psutil.Error:
            continue  # gone, or not ours
    return found


def test_every_checkpoint_is_evaluated_once_while_it_trains_across_a_daemon_crash(trained) -> None:
    home, output = trained
    instance = DagsterInstance.get()
    runs = live_runs(instance)
    keys = sorted(run.tags["dagster/run_key"] for run in runs)
    assert len(set(keys)) == len(keys) == len(CURVE), keys
    assert sorted(int(key.rsplit("step-", 1)[1]) for key in keys) == CURVE
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs), [run.status for run in runs]
    assert len(instance.get_runs(RunsFilter(job_name="live_evaluation"))) == len(runs), "a live evaluation failed"

    # Each point of the curve was computed exactly once, by a live run or by the final eval, never by both.
    computed = [int(step) for run in runs for step in COMPUTED.findall(run_log(instance, run.run_id))]
    final_computed = [int(step) for step in COMPUTED.findall(output)]
    assert sorted(computed + final_computed) == CURVE
    # Live runs evaluated checkpoints while training ran: a run that computed a point had finished before the
    # checkpoint output was committed. The final eval says which points it found done.
    trained_at = max(manifest.created_at for manifest in Store(home / "store").list("checkpoint"))
    live_ended = [instance.get_run_record_by_id(run.run_id).end_time for run in runs
                  if COMPUTED.search(run_log(instance, run.run_id))]
    assert live_ended and min(live_ended) < trained_at, "no checkpoint was evaluated while training ran"
    found = re.search(r"eval: (\d+) of 5 checkpoints came from the evaluation cache", output)
    assert found and int(found.group(1)) == len(CURVE) - len(final_computed), output[-3000:]

    # Every live run logged its point of the validation curve to the training's MLflow run, at its step.
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    training_run = runs[0].run_config["ops"]["evaluate_saved_checkpoint"]["config"]["mlflow_run_id"]
    history = client.get_metric_history(training_run, "val_loss/python")
    assert sorted(metric.step for metric in history) == CURVE


def test_a_killed_eval_resumes_without_recomputing_finished_checkpoints(trained) -> None:
    home, _ = trained
    other_eval = [*ARM, "eval.max_tokens_per_domain=30000"]  # the same checkpoints, evaluated anew (longer)
    cache = home / "store" / CACHE_DIR
    before = set(cache.rglob("*.json"))
    first = lab(home, *other_eval, log=home / "killed.log")
    # Three domains per checkpoint: two finished checkpoints are six new results.
    wait_for(lambda: len(set(cache.rglob("*.json")) - before) >= 6 or first.poll() is not None, 600,
             "two evaluated checkpoints", poll_s=0.1)
    assert first.poll() is None, (home / "killed.log").read_text()[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = [int(step) for step in COMPUTED.findall((home / "killed.log").read_text())]
    assert len(finished) >= 2

    second = lab(home, *other_eval, log=home / "resumed.log")
    assert second.wait(timeout=900) == 0, (home / "resumed.log").read_text()[-3000:]
    resumed = (home / "resumed.log").read_text()
    recomputed = [int(step) for step in COMPUTED.findall(resumed)]
    assert not set(recomputed) & set(finished), (finished, recomputed)
    found = re.search(r"eval: (\d+) of 5 checkpoints came from the evaluation cache", resumed)
    assert found and int(found.group(1)) == len(CURVE) - len(recomputed) >= len(finished), resumed[-3000:]
