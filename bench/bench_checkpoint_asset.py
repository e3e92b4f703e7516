"""Training throughput of the checkpoint asset (Dagster + Pipes + MLflow) against the same job run by hand.

Each repeat materializes the `checkpoint` asset of a tiny experiment through Dagster, as `lab materialize` does
(LabResource, assets/checkpoint.py, PipesSubprocessClient, MLflow; a new train.seed per repeat, so it is never a
cache hit), then runs the very same TrainJob with a plain `torchrun ... -m training.train --job job.json` into a
scratch folder. Both report the training's global tokens/s from its first logged step to its last
(report/train_timings.json), so start-up is left out on both sides and the ratio is the cost of the orchestration
while training: Pipes log messages and MLflow metric batches.

    PYTHONPATH=$PWD python bench/bench_checkpoint_asset.py --repeats 3

Runs in a fresh lab home under a temporary folder; the upstream stages are built once first, unmeasured.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestration.config import lab_home, load_experiment
from orchestration.dagster_home import prepare_dagster_home
from orchestration.experiments import Arm, Experiment
from orchestration.graph import build_graph
from orchestration.lineage import plan
from orchestration.runner import Selection, execute
from orchestration.store import Store
from training.job import TrainJob, launch_command
from training.outputs import TIMING_SUMMARY_FILE

REPO = Path(__file__).resolve().parents[1]


def overrides_for(repeat: int, extra: list[str]) -> list[str]:
    return ["experiment=tiny", f"train.seed={1000 + repeat}", *extra]


def materialize_stages(overrides: list[str], stages: list[str]) -> None:
    """One Dagster run of these stages of a one-arm experiment, as `lab materialize` runs an arm."""
    graph = build_graph([Experiment("bench", [Arm("bench", overrides)])])
    paths = graph.arm("bench", "bench").paths
    assert execute(graph, Selection([paths[stage] for stage in stages], "bench", "bench")), f"{stages} failed"


def asset_tokens_per_second(overrides: list[str]) -> float:
    materialize_stages(overrides, ["checkpoint"])
    cfg = load_experiment(overrides)
    items = {item.stage: item for item in plan(cfg, Store(lab_home(cfg) / "store"))}
    return items["checkpoint"].manifest.stats["tokens_per_second"]


def by_hand_tokens_per_second(overrides: list[str], scratch: Path) -> float:
    """The job the asset launches (assets/checkpoint.py), on the same upstream outputs, without Dagster or MLflow."""
    cfg = load_experiment(overrides)
    store = Store(lab_home(cfg) / "store")
    items = {item.stage: item for item in plan(cfg, store)}
    output = scratch / f"by_hand_{cfg.train.seed}"
    job = TrainJob(
        model=cfg.model, train=cfg.train, parallel=cfg.parallel,
        tokenizer_dir=str(store.path("tokenizer", items["tokenizer"].fingerprint)),
        train_tokens=str(store.path("mixed", items["mixed"].fingerprint) / "train_stream.bin"),
        output_dir=str(output),
    )
    job.save(scratch / "job.json")
    command = launch_command(scratch / "job.json")
    print("by hand:", " ".join(Path(part).name if part == sys.executable else part for part in command))
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((output / TIMING_SUMMARY_FILE).read_text())["tokens_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both sides, e.g. train.steps=120")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["LAB_HOME"] = str(Path(scratch) / "lab")
        prepare_dagster_home(Path(scratch) / "lab")
        materialize_stages(overrides_for(0, args.overrides), ["corpus", "filtered", "tokenizer", "mixed"])
        asset, by_hand = [], []
        for repeat in range(args.repeats):  # interleaved, so load drifts hit both sides alike
            overrides = overrides_for(repeat, args.overrides)
            started = time.perf_counter()
            asset.append(asset_tokens_per_second(overrides))
            by_hand.append(by_hand_tokens_per_second(overrides, Path(scratch)))
            print(f"repeat {repeat}: asset {asset[-1]:,.0f} tokens/s, by hand {by_hand[-1]:,.0f} tokens/s "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    a, h = statistics.median(asset), statistics.median(by_hand)
    paired = statistics.median(x / y for x, y in zip(asset, by_hand, strict=True))  # robust to load drifting
    print(f"median tokens/s: checkpoint asset {a:,.0f}, torchrun by hand {h:,.0f}, ratio asset/by hand {a / h:.3f} "
          f"(median of paired ratios {paired:.3f})")
    print(f"command: PYTHONPATH=$PWD python bench/bench_checkpoint_asset.py --repeats {args.repeats} "
          + " ".join(args.overrides))


if __name__ == "__main__":
    main()
