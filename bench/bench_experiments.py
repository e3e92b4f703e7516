"""Experiments at scale: Dagster definitions load time and `lab plan` time with 1, 10 and 50 arms, and a 4-arm
`tiny` sweep run side by side against the same four arms run one after another.

    .venv/bin/python bench/bench_experiments.py --repeats 3            # load and plan times
    .venv/bin/python bench/bench_experiments.py --sweep                # also the 4-arm sweep (about 10 minutes)

Every measurement is a fresh process (what a user waits for: imports included), on a lab home of its own where
the arms are recorded (`lab materialize` records them; here the registry is written directly, nothing trained).
Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestration.cli import as_experiment  # noqa: E402
from orchestration.experiments import record  # noqa: E402

LAB = [sys.executable, "-m", "orchestration.cli"]


def seeds(n: int) -> list[str]:
    return ["experiment=tiny", f"train.seed={','.join(str(i) for i in range(n))}"]


def timed(command: list[str], home: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "LAB_HOME": str(home)}, capture_output=True,
                            text=True)
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 2):
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return seconds


def lab_home_with_arms(n: int, root: Path) -> Path:
    """A lab home whose registry holds an n-arm sweep (configs composed and cached, as `lab materialize` leaves)."""
    home = root / f"arms{n}"
    home.mkdir()
    os.environ["LAB_HOME"] = str(home)
    record(home, as_experiment(seeds(n), multirun=n > 1, name=f"seeds{n}", baseline=""))
    timed([*LAB, "plan", "-m", *seeds(n)], home)  # warm the config cache, as a materialize would have
    return home


def load_and_plan(repeats: int, root: Path) -> list[str]:
    rows = []
    for n in (1, 10, 50):
        home = lab_home_with_arms(n, root)
        load = [timed([sys.executable, "-c", "import orchestration.definitions"], home) for _ in range(repeats)]
        plan = [timed([*LAB, "plan", "-m", *seeds(n)], home) for _ in range(repeats)]
        wrong = [timed([*LAB, "plan", "-m", *seeds(n), "train.stepz=3"], home) for _ in range(repeats)]
        rows.append(f"| {n} | {statistics.median(load):.2f} | {statistics.median(plan):.2f} | "
                    f"{statistics.median(wrong):.2f} |")
    return ["| arms | definitions load (s) | `lab plan` (s) | `lab plan` with a wrong override (s) |",
            "|---:|---:|---:|---:|", *rows]


def sweep(root: Path) -> list[str]:
    """The same four arms: one `lab materialize -m` (side by side), then four `lab materialize` in a row."""
    arms = [["experiment=tiny", f"train.seed={seed}"] for seed in range(4)]
    together = timed([*LAB, "materialize", "-m", *seeds(4)], root / "together")
    apart = sum(timed([*LAB, "materialize", *arm], root / "apart") for arm in arms)
    return ["| 4-arm tiny sweep | wall time (s) |", "|---|---:|",
            f"| `lab materialize -m` (arms side by side) | {together:.0f} |",
            f"| four `lab materialize`, one after another | {apart:.0f} |",
            f"| ratio (one after another / side by side) | {apart / together:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="also time the 4-arm sweep (trains 8 tiny models)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        print("\n".join(load_and_plan(args.repeats, root)))
        if args.sweep:
            print()
            print("\n".join(sweep(root)))


if __name__ == "__main__":
    main()
