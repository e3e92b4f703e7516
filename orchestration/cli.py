"""``lab``: the command line. Hydra overrides in, Dagster materializations out.

    lab plan        [-m] [overrides]   what would re-materialize, and why
    lab materialize [-m] [--name N] [--baseline ARM] [overrides]
                                       record the experiment (-m: a Hydra sweep, one arm per combination) and
                                       materialize what is stale through the lab's Dagster instance
    lab experiments                    every known experiment, arm by arm: materialized, stale (why) or running
    lab report EXPERIMENT [--docs]     the experiment's comparison table and where its plots are (--docs: a
                                       preset's report written to docs/experiments/<preset>.md with its plots)
    lab preset [NAME] [--tiny] [overrides]
                                       the research presets (conf/preset/); with a name: run that preset's arms
                                       and seeds (overrides apply to every arm; --tiny: its test-sized version)
    lab launch-spec [overrides]        the checkpoint's training job as a Kubernetes or Slurm spec
                                       (launcher=kubernetes|slurm; see docs/scaling.md)
    lab pull                           dvc pull every recorded output into the lab home
"""

from __future__ import annotations

import argparse
import sys
import time

from orchestration.config import ConfigError, default_lab_home, load_experiment
from orchestration.experiments import (
    Arm,
    Experiment,
    default_name,
    find_experiment,
    known_experiments,
    record,
    sweep_arms,
)
from orchestration.lineage import PlanItem, resolve_parent

UI_HINT = """Look at the results:
  make ui      Dagster UI on http://127.0.0.1:3000 (lineage, staleness, metadata), MLflow UI on http://127.0.0.1:5000
  lab plan     what an override would re-materialize, and why"""


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Hydra's multirun syntax (``a=1,2 b=x,y``) to the list of single-run override lists (a cross product)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [run for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for run in batch]


def as_experiment(overrides: list[str], multirun: bool, name: str, baseline: str) -> Experiment:
    """The experiment these overrides launch: a known one with the same config, or a new one to record."""
    runs = expand_sweep(overrides) if multirun else [overrides]
    configs = [load_experiment(run) for run in runs]  # a wrong override fails here, before anything runs
    if len(runs) == 1 and not name:
        for known in known_experiments(default_lab_home()):
            if len(known.arms) == 1 and load_experiment(known.arms[0].overrides) == configs[0]:
                return known
    axes, arms = sweep_arms(overrides, runs) if len(runs) > 1 else ({}, [Arm("", runs[0])])
    experiment = Experiment(name or default_name(overrides, configs[0].name), arms, axes=axes, baseline=baseline)
    if len(arms) == 1:
        arms[0].name = experiment.name
    if baseline and baseline not in {arm.name for arm in arms}:
        raise ConfigError(f"--baseline {baseline!r} is not an arm; arms: {', '.join(a.name for a in arms)}")
    return experiment


def print_plan(items: list[PlanItem]) -> None:
    for item in items:
        cost = f"~{item.estimated_seconds:.0f} s" if item.action == "run" and item.estimated_seconds else ""
        print(f"  {item.stage:<11} {item.action:<6} {cost:>7} {item.fingerprint or '(pending)':<17} {item.reason}")
    known = [i.estimated_seconds for i in items if i.action == "run" and i.estimated_seconds]
    if known:
        print(f"  estimated: ~{sum(known):.0f} s, from the nearest earlier build of each stage that will run")


def summary_line(item: PlanItem) -> str:
    stats = item.manifest.stats if item.manifest else {}
    if item.stage == "eval":
        mean = {key: sum(r[key] for r in stats.values()) / max(len(stats), 1) for key in ("initial_loss", "loss")}
        detail = f"val loss {mean['initial_loss']:.3f} -> {mean['loss']:.3f}, bpb " + \
            " ".join(f"{d} {r['bits_per_byte']:.2f}" for d, r in stats.items())
    elif item.stage == "checkpoint":
        detail = f"loss {stats.get('first_loss', 0):.3f} -> {stats.get('final_loss', 0):.3f}, " \
                 f"{stats.get('tokens_per_second') or 0:,.0f} tokens/s"
    elif item.stage == "mixed":
        detail = f"{stats.get('stream_tokens', 0):,} training tokens"
    elif item.stage == "tokenizer":
        detail = f"vocabulary {stats.get('vocab_size')}"
    else:
        detail = f"{stats.get('documents', stats.get('kept', 0)):,} documents"
    mlflow_run = item.manifest.mlflow_run_id if item.manifest else ""
    return f"  {item.stage:<11} {detail:<60} fp {item.fingerprint}  mlflow {mlflow_run}"


def materialize_experiment(experiment: Experiment) -> bool:
    from orchestration import runner
    from orchestration.dagster_home import open_instance
    from orchestration.graph import build_graph
    from orchestration.lab import lab_for
    from orchestration.presets import arm_waves
    from orchestration.webserver import reload_running_webserver

    home = default_lab_home()
    instance = open_instance(home)
    own_arms = {tuple(arm.overrides) for arm in experiment.arms}
    for arm in experiment.arms:  # parents first: a child's plan needs the parent's checkpoint and eval
        parent = resolve_parent(lab_for(arm.overrides).cfg, lab_for(arm.overrides).store)
        if parent is not None and tuple(parent.overrides) in own_arms:
            continue  # an arm of this experiment: built in an earlier wave below
        if parent is not None and None in (parent.manifests["checkpoint"], parent.manifests["eval"]):
            print(f"Materializing the parent experiment first: {' '.join(parent.overrides)}")
            if not materialize_experiment(as_experiment(parent.overrides, False, "", "")):
                return False
    if experiment.source == "lab":
        record(home, experiment)
    if reload_running_webserver(home):
        print("The Dagster UI reloaded its definitions: the experiment's arms are there.")
    closed = runner.close_dead_runs(instance)
    if closed:
        print(f"Closed {len(closed)} run(s) whose process had died: {', '.join(closed)}")
    started = time.time()
    graph = build_graph(known_experiments(home))
    ran_any, ok = False, True
    # Arms that start from another arm of this experiment (a preset's branches) run after it, wave by wave.
    for wave in arm_waves(experiment):
        stale = runner.stale_keys(graph, experiment, [arm.name for arm in wave])
        for arm in wave:
            print(f"\nExperiment '{experiment.name}', arm '{arm.name}': {' '.join(arm.overrides)}")
            print_plan(lab_for(arm.overrides).plan())
        ok = ok and run_wave(graph, experiment, stale)
        ran_any = ran_any or any(stale.values())
    if ok and (ran_any or not report_exists(experiment)):
        ok = runner.execute(graph, runner.Selection(runner.report_keys(graph, experiment), experiment.name))
    if ok:
        summarize(experiment, time.time() - started)
    return ok


def run_wave(graph, experiment: Experiment, stale: dict[str, list[list[str]]]) -> bool:
    """What the wave's arms share, once; then each arm's own assets (one run, or a run per arm side by side)."""
    from orchestration import runner

    shared, own = runner.split_shared(stale)
    if not runner.execute(graph, runner.Selection(shared, experiment.name)):
        return False
    if len(own) == 1:
        arm, keys = next(iter(own.items()))
        return runner.execute(graph, runner.Selection(keys, experiment.name, arm))
    return runner.run_arms_side_by_side(experiment, own)


def report_exists(experiment: Experiment) -> bool:
    from orchestration.lab import lab_for
    from orchestration.reports import latest_report

    found, missing = latest_report(lab_for(experiment.arms[0].overrides).store, experiment)
    return found is not None and not missing


def summarize(experiment: Experiment, seconds: float) -> None:
    """Each arm's outputs for its config, then where to look."""
    from orchestration.lab import lab_for

    print(f"\nDone in {seconds:.0f} s. Lab home: {default_lab_home()}")
    for arm in experiment.arms:
        print(f"{experiment.name} / {arm.name}:")
        for item in lab_for(arm.overrides).plan():
            print(summary_line(item))
    print(f"  lab report {experiment.name}   the arms compared\n{UI_HINT}")


def run_arm(experiment_name: str, arm_name: str) -> bool:
    """One arm's stale assets in one Dagster run (``lab materialize`` starts this per arm, side by side)."""
    from orchestration import runner
    from orchestration.dagster_home import open_instance
    from orchestration.graph import build_graph

    home = default_lab_home()
    open_instance(home)
    experiment = find_experiment(home, experiment_name)
    graph = build_graph(known_experiments(home))
    keys = runner.stale_keys(graph, experiment, [arm_name])[arm_name]
    return runner.execute(graph, runner.Selection(keys, experiment.name, arm_name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command",
                        choices=["plan", "materialize", "experiments", "report", "preset", "launch-spec", "pull",
                                 "run-arm"])
    parser.add_argument("-m", "--multirun", action="store_true", help="sweep over comma-separated values")
    parser.add_argument("--name", default="", help="the experiment's name (default: derived from the overrides)")
    parser.add_argument("--baseline", default="", help="the arm the report compares against (default: the first)")
    parser.add_argument("--tiny", action="store_true", help="preset: its tiny version (what make test runs)")
    parser.add_argument("--docs", action="store_true", help="report: write a preset's report to docs/experiments")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. filter.prose.min_doc_words=30")
    args = parser.parse_intermixed_args(argv)
    try:
        if args.command == "plan":
            return plan_command(args.overrides, args.multirun)
        if args.command == "experiments":
            from orchestration.status import print_experiments

            return print_experiments(default_lab_home())
        if args.command == "report":
            from orchestration.status import print_report

            return print_report(default_lab_home(), " ".join(args.overrides), args.docs)
        if args.command == "preset":
            return preset_command(args.overrides, args.tiny, args.name)
        if args.command == "run-arm":
            experiment, *arm = args.overrides
            return 0 if run_arm(experiment, " ".join(arm)) else 1
        if args.command == "launch-spec":
            from orchestration import cluster_launch

            return cluster_launch.main(args.overrides)
        if args.command == "pull":
            return pull(args.overrides)
        experiment = as_experiment(args.overrides, args.multirun, args.name, args.baseline)
        return 0 if materialize_experiment(experiment) else 1
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"lab: {error}", file=sys.stderr)
        return 2


def preset_command(words: list[str], tiny: bool, name: str) -> int:
    """``lab preset``: list the presets; ``lab preset NAME [overrides]``: run one, then write its report."""
    from orchestration.presets import load_preset, preset_experiment, preset_names

    if not words:
        for preset_name in preset_names():
            preset = load_preset(preset_name)
            print(f"  {preset_name:<22} {preset.title}  ({len(preset.arms)} arms x {len(preset.seeds)} seeds)")
        print("Run one: lab preset NAME [overrides]   (its test-sized version: --tiny)")
        return 0
    preset_name, *extra = words
    preset = load_preset(preset_name).variant(tiny)
    experiment = preset_experiment(preset, extra, name or (f"{preset_name}_tiny" if tiny and not extra else ""))
    for arm in experiment.arms:
        load_experiment(arm.overrides)  # a wrong override fails here, before anything runs
    return 0 if materialize_experiment(experiment) else 1


def plan_command(overrides: list[str], multirun: bool) -> int:
    from orchestration.lab import lab_for

    for run in expand_sweep(overrides) if multirun else [overrides]:
        lab = lab_for(run)
        print(f"Experiment '{lab.cfg.name}' {' '.join(run)}")
        print_plan(lab.plan())
    return 0


def pull(overrides: list[str]) -> int:
    """Bring every output recorded by a DVC pointer in the lab home back from the remote."""
    from orchestration.lab import Lab

    lab = Lab(overrides)
    pointers = sorted(p.relative_to(lab.store.root).as_posix() for p in lab.store.root.glob("*/*.dvc"))
    for pointer in pointers:
        lab.dvc.pull(pointer)
        print(f"pulled {pointer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
