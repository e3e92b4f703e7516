"""Training dies with the process that launched it: a SIGKILLed launcher leaves no torchrun and no rank behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tiny_training import REPO, make_corpus, tiny_job

# The orchestrating process, reduced to what matters: it launches the job and waits. Its output goes to a file, so
# that no closed pipe ends torchrun when this process dies; the job comes by environment, so that the launcher's
# own command line does not name it.
LAUNCHER = """
import os, subprocess
from training.job import launch_command
with open(os.environ["JOB"] + ".log", "w") as log:
    subprocess.run(launch_command(os.environ["JOB"]), stdout=log, stderr=subprocess.STDOUT)
"""


def job_processes(job_path: Path) -> list[psutil.Process]:
    """torchrun and the ranks of the job at ``job_path`` (each names it on its command line)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if str(job_path) in (process.info["cmdline"] or []) and process.status() != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def ranks(job_path: Path) -> list[psutil.Process]:
    return [p for p in job_processes(job_path) if "torch.distributed.run" not in p.info["cmdline"]]


def wait_for(condition, what: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_killing_the_launcher_kills_torchrun_and_its_ranks(tmp_path: Path) -> None:
    job = tiny_job(make_corpus(tmp_path), tmp_path / "run", steps=100_000)  # hours of training, if orphaned
    job.train.checkpoint_interval = 100_000
    job_path = tmp_path / "job.json"
    job.save(job_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JOB": str(job_path)}
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=REPO, env=env)
    steps = tmp_path / "run" / "train_steps.jsonl"
    try:
        wait_for(lambda: len(ranks(job_path)) == 2 and steps.exists() and steps.stat().st_size > 0,
                 "two ranks training", limit=600)
        launcher.kill()
        launcher.wait()
        wait_for(lambda: not job_processes(job_path), "torchrun and the ranks to end", limit=120)
    finally:
        for process in job_processes(job_path):
            process.kill()
    assert launcher.returncode == -signal.SIGKILL


def test_the_wrapper_execs_its_command_in_its_own_process(tmp_path: Path) -> None:
    shown = subprocess.run([sys.executable, "-m", "training.parent_death", "sh", "-c", "echo $$ $LAB_LAUNCHER_PID"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert len(shown) == 2 and shown[0] == shown[1]


def ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def block_sigterm() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


@pytest.mark.parametrize("inherited", [None, ignore_sigterm, block_sigterm], ids=["default", "ignored", "blocked"])
def test_a_process_whose_parent_is_already_gone_stops_itself(inherited) -> None:
    """Also when the process that started it ignores or blocks SIGTERM, which its children inherit."""
    check = "import signal, sys; from training.parent_death import die_with_parent; die_with_parent(signal.SIGTERM, {})"
    alive = subprocess.run([sys.executable, "-c", check.format(os.getpid())], cwd=REPO, preexec_fn=inherited)
    orphan = subprocess.run([sys.executable, "-c", check.format(0)], cwd=REPO,  # 0: not the parent it has
                            preexec_fn=inherited)
    assert alive.returncode == 0 and orphan.returncode == -signal.SIGTERM
