"""How ``lab materialize`` runs an experiment through the Dagster instance of the lab home.

1. The experiment is recorded in the lab home (a sweep as one experiment of several arms) and a running Dagster
   UI is asked to reload, so the new arms appear there.
2. A parent experiment (continual pretraining, a WSD branch) that has no checkpoint yet is materialized first.
3. What the arms share and is stale (the curation trunk) is materialized once, in one run.
4. Each arm's own stale assets run in a Dagster run of their own, several arms side by side (a process each, at
   most ``max_concurrent_runs`` of dagster.yaml); training steps take the ``training`` pool, so at most its limit
   train at once across every run on the instance.
5. The experiment's report compares its arms.

Every run carries ``lab/experiment`` and ``lab/arm`` tags, and ``lab/pid``/``lab/host`` so that a run whose
process was killed can be recognised and closed (its pool slot freed) by the next ``lab`` on this host.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import psutil
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter, materialize

from orchestration.config import REPO_ROOT
from orchestration.experiments import Experiment
from orchestration.graph import LAW_FIT, REPORT, Graph
from orchestration.lab import lab_for
from orchestration.resources import LabResource


@dataclass
class Selection:
    keys: list[list[str]]
    experiment: str
    arm: str = ""  # empty: a run for several arms (the shared trunk, the report)


def stale_keys(graph: Graph, experiment: Experiment, arms: list[str] | None = None) -> dict[str, list[list[str]]]:
    """Per arm (every arm, or those named), the asset keys its plan will (re)build."""
    stale = {}
    for arm in graph.experiment_arms(experiment.name):
        if arms is not None and arm.arm.name not in arms:
            continue
        items = lab_for(arm.arm.overrides).plan()
        stale[arm.arm.name] = [arm.paths[item.stage] for item in items if item.action == "run"]
    return stale


def report_keys(graph: Graph, experiment: Experiment) -> list[list[str]]:
    """The experiment's own assets above its arms: its law fit (a law preset) and its report."""
    return [key for key in graph.experiment_keys(experiment.name) if key[-1] in (LAW_FIT, REPORT)]


def split_shared(stale: dict[str, list[list[str]]]) -> tuple[list[list[str]], dict[str, list[list[str]]]]:
    """Keys two or more arms need (built once, first) and what each arm needs alone."""
    counts: dict[tuple[str, ...], int] = {}
    for keys in stale.values():
        for key in keys:
            counts[tuple(key)] = counts.get(tuple(key), 0) + 1
    shared = [list(key) for key, n in counts.items() if n > 1]
    own = {arm: [k for k in keys if counts[tuple(k)] == 1] for arm, keys in stale.items()}
    return shared, own


def run_tags(selection: Selection) -> dict[str, str]:
    tags = {"lab/experiment": selection.experiment, "lab/pid": str(os.getpid()), "lab/host": socket.gethostname()}
    return {**tags, "lab/arm": selection.arm} if selection.arm else tags


def execute(graph: Graph, selection: Selection) -> bool:
    """One Dagster run, in this process, of the selected assets (the definitions of every known arm)."""
    from orchestration.definitions import build_definitions

    if not selection.keys:
        return True
    definitions = build_definitions(graph)
    result = materialize(
        # With the asset checks: a blocking check that fails stops the assets below it in this run.
        [*definitions.assets, *definitions.asset_checks], selection=[AssetKey(key) for key in selection.keys],
        instance=DagsterInstance.get(), resources={"lab": LabResource()}, tags=run_tags(selection),
        raise_on_error=False, run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )
    if not result.success:
        print(f"Dagster run {result.run_id} ({selection.experiment} {selection.arm}) failed; see the step logs "
              "above or in `make ui`.", file=sys.stderr)
    return result.success


def max_parallel_runs() -> int:
    """The run coordinator's limit in dagster.yaml: the same number of runs the UI would admit at once."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    return int(config["concurrency"]["runs"]["max_concurrent_runs"])


def run_arms_side_by_side(experiment: Experiment, own: dict[str, list[list[str]]]) -> bool:
    """Each arm's run in a process of its own, at most ``max_parallel_runs()`` at once."""
    pending = [arm for arm, keys in own.items() if keys]
    running: list[tuple[str, subprocess.Popen]] = []
    ok = True
    while pending or running:
        while pending and len(running) < max_parallel_runs():
            arm = pending.pop(0)
            # Under training.parent_death: an arm's run (and its training) ends when this process is killed.
            command = [sys.executable, "-m", "training.parent_death", sys.executable, "-m", "orchestration.cli",
                       "run-arm", experiment.name, arm]
            running.append((arm, subprocess.Popen(command, cwd=REPO_ROOT)))
        arm, process = running[0]
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            running.append(running.pop(0))
            continue
        running.pop(0)
        ok = ok and process.returncode == 0
    return ok


def close_dead_runs(instance: DagsterInstance) -> list[str]:
    """Runs of this host whose `lab` process died (SIGKILL, a reboot): marked failed, their pool slots freed."""
    closed = []
    active = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING],
                                          tags={"lab/host": socket.gethostname()}))
    for run in active:
        pid = int(run.tags.get("lab/pid", "0"))
        if pid and not psutil.pid_exists(pid):
            instance.report_run_failed(run, f"its process {pid} is gone (killed); closed by a later `lab`")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            closed.append(run.run_id)
    return closed
