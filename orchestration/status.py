"""What ``lab experiments`` and ``lab report`` print: every arm's state, and an experiment's comparison."""

from __future__ import annotations

from pathlib import Path

from orchestration.experiments import Experiment, find_experiment, known_experiments
from orchestration.lab import lab_for


def running_arms(home: Path) -> set[tuple[str, str]]:
    """(experiment, arm) of the Dagster runs in progress on the lab's instance; "" for runs of several arms."""
    from dagster import DagsterRunStatus, RunsFilter

    from orchestration.dagster_home import open_instance

    runs = open_instance(home).get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING,
                                                                DagsterRunStatus.QUEUED]))
    return {(run.tags.get("lab/experiment", ""), run.tags.get("lab/arm", "")) for run in runs}


def arm_state(experiment: Experiment, arm_name: str, overrides: list[str], running: set[tuple[str, str]]) -> str:
    if (experiment.name, arm_name) in running or (experiment.name, "") in running:
        return "running"
    items = lab_for(overrides).plan()
    stale = [item for item in items if item.action == "run"]
    if not stale:
        return "materialized"
    if all(item.manifest is None for item in items):  # nothing of this arm exists yet
        return "not materialized"
    return f"stale: {stale[0].stage} ({stale[0].reason})" + (f" and {len(stale) - 1} below" if len(stale) > 1 else "")


def print_experiments(home: Path) -> int:
    running = running_arms(home)
    for experiment in known_experiments(home):
        origin = "conf/experiment" if experiment.source == "conf" else "recorded by lab"
        axes = "; ".join(f"{k} = {', '.join(v)}" for k, v in experiment.axes.items())
        print(f"{experiment.name}  ({origin}, {len(experiment.arms)} arm{'s' * (len(experiment.arms) > 1)})"
              + (f"  sweep: {axes}" if axes else ""))
        for arm in experiment.arms:
            state = arm_state(experiment, arm.name, arm.overrides, running)
            label = arm.name if len(experiment.arms) > 1 else " ".join(arm.overrides)
            print(f"  {label:<40} {state}")
    return 0


def print_report(home: Path, name: str, docs: bool = False) -> int:
    from orchestration.reports import latest_report

    if not name:
        raise ValueError("lab report needs an experiment's name; see `lab experiments`")
    experiment = find_experiment(home, name)
    store = lab_for(experiment.arms[0].overrides).store
    report, missing = latest_report(store, experiment)
    if report is None:
        waiting = f"arms still to materialize: {', '.join(missing)}" if missing else "its report is not built"
        print(f"{experiment.name}: no report for its current outputs ({waiting}). "
              f"Run `lab materialize` on it (or its job in the UI).")
        return 1
    folder = store.path("report", report.fingerprint)
    if docs:
        return write_preset_docs(experiment, folder)
    print((folder / "comparison.md").read_text())
    if (folder / "finding.md").is_file():
        print((folder / "finding.md").read_text())
    print(f"Plots: {', '.join(str(p) for p in sorted(folder.glob('*.png')))}")
    return 0


def write_preset_docs(experiment, report_dir: Path) -> int:
    """``lab report <preset> --docs``: the preset's page in docs/experiments/, from the lab home alone."""
    from orchestration.law_fits import law_dir
    from orchestration.preset_reports import write_docs

    if not experiment.preset:
        raise ValueError(f"{experiment.name} is not a research preset; --docs writes preset reports "
                         "(`lab preset` lists them)")
    page = write_docs(experiment, report_dir, law_dir(experiment))
    print(f"Wrote {page} and its figures in {page.with_suffix('')}/")
    return 0
