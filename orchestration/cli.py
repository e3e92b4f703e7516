"""``lab``: the command line. Hydra overrides in, Dagster materializations out.

    lab plan     [overrides]        what would re-materialize, and why
    lab materialize [-m] [overrides] materialize what is stale through the Dagster instance (-m: Hydra sweep)
    lab pull                        dvc pull every recorded output into the lab home
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from orchestration.config import REPO_ROOT, ConfigError, ExperimentConfig, compose_experiment, lab_home
from orchestration.lineage import PlanItem, plan, resolve_parent
from orchestration.store import Store

UI_HINT = """Look at the results:
  make ui      Dagster UI on http://127.0.0.1:3000 (lineage, staleness, metadata), MLflow UI on http://127.0.0.1:5000
  lab plan     what an override would re-materialize, and why"""


def prepare_dagster_home(home: Path) -> Path:
    """The Dagster instance lives in the lab home, configured by the repository's dagster.yaml."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Hydra's multirun syntax (``a=1,2 b=x,y``) to the list of single-run override lists (a cross product)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [run for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for run in batch]


def print_plan(items: list[PlanItem]) -> None:
    for item in items:
        cost = f"~{item.estimated_seconds:.0f} s" if item.action == "run" and item.estimated_seconds else ""
        print(f"  {item.stage:<11} {item.action:<6} {cost:>7} {item.fingerprint or '(pending)':<17} {item.reason}")
    known = [i.estimated_seconds for i in items if i.action == "run" and i.estimated_seconds]
    if known:
        print(f"  estimated: ~{sum(known):.0f} s, from the last build of each stage that will run")


def summary_line(item: PlanItem) -> str:
    stats = item.manifest.stats if item.manifest else {}
    if item.stage == "eval":
        mean = {key: sum(r[key] for r in stats.values()) / max(len(stats), 1) for key in ("initial_loss", "loss")}
        detail = f"val loss {mean['initial_loss']:.3f} -> {mean['loss']:.3f}, bpb " + \
            " ".join(f"{d} {r['bits_per_byte']:.2f}" for d, r in stats.items())
    elif item.stage == "checkpoint":
        detail = f"loss {stats.get('first_loss', 0):.3f} -> {stats.get('final_loss', 0):.3f}, " \
                 f"{stats.get('tokens_per_second', 0):,.0f} tokens/s"
    elif item.stage == "mixed":
        detail = f"{stats.get('stream_tokens', 0):,} training tokens"
    elif item.stage == "tokenizer":
        detail = f"vocabulary {stats.get('vocab_size')}"
    else:
        detail = f"{stats.get('documents', stats.get('kept', 0)):,} documents"
    mlflow_run = item.manifest.mlflow_run_id if item.manifest else ""
    return f"  {item.stage:<11} {detail:<60} fp {item.fingerprint}  mlflow {mlflow_run}"


def materialize_one(overrides: list[str]) -> bool:
    from dagster import AssetKey, DagsterInstance, materialize

    from orchestration.definitions import versioned_assets
    from orchestration.resources import LabResource

    cfg, _ = compose_experiment(overrides)
    store = Store(lab_home(cfg) / "store")
    prepare_dagster_home(lab_home(cfg))
    parent = resolve_parent(cfg, store)
    if parent is not None and parent.manifest is None:
        print(f"Materializing the parent experiment first: {' '.join(parent.overrides)}")
        if not materialize_one(parent.overrides):
            return False
    before = plan(cfg, store)
    stale = [item.stage for item in before if item.action == "run"]
    if parent is not None and stale:
        stale.insert(0, "parent_checkpoint")
    print(f"Experiment '{cfg.name}' {' '.join(overrides)}\nPlan:")
    print_plan(before)
    started, run_id = time.time(), ""
    if stale:
        result = materialize(
            versioned_assets(overrides), selection=[AssetKey(name) for name in stale],
            instance=DagsterInstance.get(), resources={"lab": LabResource(overrides=overrides)},
            tags={"lab/experiment": cfg.name}, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        if not result.success:
            print(f"\nDagster run {result.run_id} failed; see the step logs above or in `make ui`.", file=sys.stderr)
            return False
        run_id = result.run_id
    report(cfg, store, run_id, time.time() - started)
    return True


def report(cfg: ExperimentConfig, store: Store, run_id: str, seconds: float) -> None:
    """Each stage's output for this config; 'materialized' where this Dagster run built it, else 'reused'."""
    print(f"\nDone in {seconds:.0f} s. Lab home: {lab_home(cfg)}")
    for item in plan(cfg, store):
        built_now = run_id and item.manifest and item.manifest.dagster_run_id == run_id
        state = "materialized" if built_now else "reused"
        print(f"{state:>13}{summary_line(item)}")
    print(UI_HINT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["plan", "materialize", "pull"])
    parser.add_argument("-m", "--multirun", action="store_true", help="sweep over comma-separated values")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. filter.prose.min_doc_words=30")
    args = parser.parse_args(argv)
    try:
        runs = expand_sweep(args.overrides) if args.multirun else [args.overrides]
        if args.command == "plan":
            for overrides in runs:
                cfg, _ = compose_experiment(overrides)
                print(f"Experiment '{cfg.name}' {' '.join(overrides)}")
                print_plan(plan(cfg, Store(lab_home(cfg) / "store")))
            return 0
        if args.command == "pull":
            return pull(args.overrides)
        return 0 if all([materialize_one(overrides) for overrides in runs]) else 1
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"lab: {error}", file=sys.stderr)
        return 2


def pull(overrides: list[str]) -> int:
    """Bring every output recorded by a DVC pointer in the lab home back from the remote."""
    from orchestration.resources import Lab

    lab = Lab(compose_experiment(overrides)[0])
    pointers = sorted(p.relative_to(lab.store.root).as_posix() for p in lab.store.root.glob("*/*.dvc"))
    for pointer in pointers:
        lab.dvc.pull(pointer)
        print(f"pulled {pointer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
