"""A run whose step waits for a pool slot sleeps while it waits (orchestration/dagster_compat.py): a real Dagster
run in a process of its own, blocked on the ``training`` pool whose one slot this test holds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
from dagster import DagsterInstance
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

from orchestration.config import REPO_ROOT
from orchestration.dagster_compat import seconds_to_next_claim_check
from orchestration.dagster_home import prepare_dagster_home

QUEUED = """
from dagster import DagsterInstance, asset, materialize
from orchestration.dagster_compat import fix_pool_wait

fix_pool_wait()

@asset(pool="training")
def queued() -> int:
    return 1

assert materialize([queued], instance=DagsterInstance.get()).success
"""


def blocked(instance: DagsterInstance) -> bool:
    return any("blocked by limit for pool training" in (entry.user_message or "")
               for run in instance.get_runs() for entry in instance.all_logs(run.run_id))


def test_a_step_waiting_for_the_training_pool_sleeps(tmp_path: Path) -> None:
    import orchestration.definitions  # noqa: F401 (every process that runs the lab's runs loads them)

    assert InstanceConcurrencyContext.interval_to_next_pending_claim_check is seconds_to_next_claim_check
    prepare_dagster_home(tmp_path)
    instance = DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots("training", 1)
    instance.event_log_storage.claim_concurrency_slot("training", "another-run", "its-training-step")

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DAGSTER_HOME": os.environ["DAGSTER_HOME"]}
    run = subprocess.Popen([sys.executable, "-c", QUEUED], env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not blocked(instance):
            assert run.poll() is None, run.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the run never waited for the pool"
            time.sleep(0.5)
        process = psutil.Process(run.pid)
        before = sum(process.cpu_times()[:2])
        time.sleep(5)
        used = sum(process.cpu_times()[:2]) - before
        # Spinning, the run took whatever CPU it got (a full core on an idle machine): seconds, not a fraction.
        assert used < 0.5, f"the waiting run used {used:.2f} s of CPU in 5 s"
        instance.event_log_storage.free_concurrency_slot_for_step("another-run", "its-training-step")
        assert run.wait(timeout=120) == 0, run.stderr.read()[-3000:]
    finally:
        run.kill()
        run.wait()
