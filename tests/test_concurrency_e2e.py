"""Many `lab materialize` processes on one fresh lab home, for real: four started at the same moment on overlapping
experiments all succeed and build each shared output once; a fifth, SIGKILLed mid-training, leaves no process
behind and a partial output that the next run resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dagster import AssetKey, DagsterInstance

from orchestration.config import load_experiment
from orchestration.dagster_home import prepare_dagster_home
from orchestration.lineage import plan
from orchestration.store import Store
from training.outputs import step_log

pytestmark = pytest.mark.e2e
SHORT = ["experiment=tiny", "train.steps=20", "train.checkpoint_interval=10"]
OVERLAPPING = [
    SHORT,
    [*SHORT, "train.seed=1"],
    [*SHORT, "eval.seq_len=32"],  # shares the first one's checkpoint
    ["-m", *SHORT, "mixture.weights.docs=0.2,0.4"],
]


def lab(home: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    """`lab materialize` in a process of its own; its output piped (read it with communicate) or written to log."""
    output = log.open("w") if log else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "orchestration.cli", "materialize", *args],
                            env={**os.environ, "LAB_HOME": str(home)}, stdout=output,
                            stderr=subprocess.STDOUT, text=True)


def committed(home: Path, stage: str) -> list[Path]:
    return sorted((home / "store" / stage).glob("*/manifest.json"))


def built_by_a_run(key: list[str]) -> int:
    """Materializations of the asset that built it (the others reused what another run had built)."""
    records = DagsterInstance.get().fetch_materializations(AssetKey(key), limit=100).records
    return sum(not r.asset_materialization.metadata["reused"].value for r in records)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("lab")
    patch = pytest.MonkeyPatch()
    patch.setenv("LAB_HOME", str(home))
    prepare_dagster_home(home)
    yield home
    patch.undo()


def test_four_runs_at_once_build_each_shared_output_once(home: Path) -> None:
    processes = [lab(home, *args) for args in OVERLAPPING]
    outputs = [process.communicate(timeout=1800)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    for stage in ("corpus", "filtered", "tokenizer"):
        assert len(committed(home, stage)) == 1
        assert built_by_a_run(["tiny", stage]) == 1
    # Training: the first and third share one run; the seed and the two mixtures are their own.
    assert len(committed(home, "checkpoint")) == 4
    store = Store(home / "store")
    first, third = ({i.stage: i for i in plan(load_experiment(o), store)} for o in (OVERLAPPING[0], OVERLAPPING[2]))
    assert first["checkpoint"].fingerprint == third["checkpoint"].fingerprint
    assert first["eval"].fingerprint != third["eval"].fingerprint
    assert not list((home / "store").glob("*/.partial-*"))  # nothing half-built left behind


def training_partial(home: Path) -> Path | None:
    """The partial output of a training run in progress (the only one: this test trains one model at a time)."""
    return next((home / "store" / "checkpoint").glob(".partial-*"), None)


def training_processes(root: psutil.Process) -> list[psutil.Process]:
    return [p for p in root.children(recursive=True) if "training.train" in " ".join(p.cmdline())
            or "torch.distributed.run" in " ".join(p.cmdline())]


def test_a_killed_run_leaves_no_process_and_the_next_one_resumes(home: Path) -> None:
    overrides = ["experiment=tiny", "train.steps=40", "train.checkpoint_interval=10", "train.seed=5"]
    killed = lab(home, *overrides, log=home / "killed.log")
    deadline = time.monotonic() + 900
    while not (partial := training_partial(home)) or 20 not in step_log(partial):  # logged after step 20 ran
        assert killed.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.2)
    children = training_processes(psutil.Process(killed.pid))
    assert children, "torchrun and its ranks run under the lab process"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    gone, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, f"left running after their run was killed: {[p.cmdline() for p in alive]}"
    fingerprint = partial.name.removeprefix(".partial-")
    assert partial.is_dir() and not (home / "store" / "checkpoint" / fingerprint).exists()
    # The next run takes the dead run's lease and pool slot over and resumes from the last complete checkpoint.
    again = lab(home, *overrides)
    output, _ = again.communicate(timeout=900)
    assert again.returncode == 0, output[-3000:]
    assert "Closed 1 run(s) whose process had died" in output
    steps = [json.loads(line)["step"] for line in (home / "store" / "checkpoint" / fingerprint /
                                                    "train_steps.jsonl").read_text().splitlines()]
    # Resumed from a checkpoint the killed run had saved (10 or 20), not from scratch: step 10 was trained once.
    assert re.search(r"Loading the checkpoint from \S*step-(10|20)\b", output), output[-3000:]
    assert steps.count(10) == 1 and steps[-1] == 40
