"""A training rank SIGKILLed in the middle of a checkpoint save, with the store on S3 (moto_server behind
tests/s3_proxy.py), and the run resumed on another host from the last complete checkpoint in the bucket.

The tiny lineage trains 20 steps with a checkpoint every 10. Rank 1 is held inside DCP's save of step 20: its shard
file is a FIFO, put into the partial output when the checkpoint asset first asks the bucket for its output (the
request waits for it), so opening it for writing blocks until a reader comes, and none does. The rank is SIGKILLed
there, after rank 0 wrote its shard and before any `.metadata`; the asset's one Dagster retry resumes on the same
host from step 10, is held and killed the same way, and the run fails. The lab home's cache is then deleted (the
next run is on another host) and a second materialization restores the mirrored step 10 from the bucket, trains
steps 11 to 20 again with the losses of the first, uninterrupted try at every step, and commits. No timing: the
rank is killed once the kernel shows it waiting for the FIFO's reader.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from orchestration.config import REPO_ROOT
from tests.conftest import bucket_objects, committed
from tests.s3_proxy import EndpointProxy

STEPS, INTERVAL = 20, 10
MATERIALIZE = [sys.executable, "-m", "orchestration.cli", "materialize", "experiment=tiny", f"train.steps={STEPS}",
               f"train.checkpoint_interval={INTERVAL}", "train.log_every=1"]
RANK1_SHARD = "__1_0.distcp"  # DCP's file of rank 1: __<rank>_<file number>.distcp


class CutSave:
    """At the first request for the checkpoint output's manifest (its fingerprint is known from then on, and
    training has not started), make rank 1's shard of step 20 a FIFO in the local partial output."""

    def __init__(self, bucket: str, store: Path):
        self.request = re.compile(rf"GET /{bucket}/lab/checkpoint/([0-9a-f]{{16}})/manifest\.json")
        self.store, self.lock = store, threading.Lock()
        self.fingerprint = ""

    def __call__(self, request: str) -> None:
        match = self.request.match(request)
        with self.lock:  # requests come on several connections at once
            if match and not self.fingerprint:
                self.fingerprint = match[1]
                step = self.partial / "checkpoint" / f"step-{STEPS}"
                step.mkdir(parents=True)
                os.mkfifo(step / RANK1_SHARD)

    @property
    def partial(self) -> Path:
        return self.store / "checkpoint" / f".partial-{self.fingerprint}"


def waiting_for_fifo_reader(pid: int) -> bool:
    """Whether a thread of the process is blocked opening a FIFO (Linux: the kernel's wait_for_partner)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return any(Path(task, "wchan").read_text().strip() == "wait_for_partner" for task in tasks)
    except (FileNotFoundError, ProcessLookupError):  # it exited meanwhile
        return False


def kill_rank1_held_in_save(proc: subprocess.Popen, cut: CutSave, times: int) -> None:
    """SIGKILL rank 1 each time a training (the first try, then Dagster's retry) holds it in the save of step 20,
    once rank 0 has written its shard there (rank 0 then waits for rank 1 to finish the save)."""
    killed: set[int] = set()
    deadline = time.monotonic() + 600  # a guard against a hang, not a timing
    while len(killed) < times:
        assert proc.poll() is None, f"the run ended after {len(killed)} kills, before rank 1 was held in a save"
        assert time.monotonic() < deadline, "rank 1 was never held in the save of the cut step"
        rank0_wrote = cut.fingerprint and (cut.partial / "checkpoint" / f"step-{STEPS}" / "__0_0.distcp").exists()
        for worker in psutil.Process(proc.pid).children(recursive=True) if rank0_wrote else ():
            try:
                rank1 = "training.train" in worker.cmdline() and worker.environ().get("RANK") == "1"
            except psutil.NoSuchProcess:
                continue
            if rank1 and worker.pid not in killed and waiting_for_fifo_reader(worker.pid):
                worker.send_signal(signal.SIGKILL)
                killed.add(worker.pid)
        time.sleep(0.1)


def end_tree(proc: subprocess.Popen) -> None:
    """Kill what is left of a run that a failed assertion left behind (its ranks may wait on the FIFO)."""
    if proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def tries(rows: list[dict]) -> list[dict[int, float]]:
    """The losses by step of each training process, in order: a row whose step is not after the last starts one."""
    runs: list[dict[int, float]] = []
    for row in rows:
        if not runs or row["step"] <= max(runs[-1]):
            runs.append({})
        runs[-1][row["step"]] = row["loss"]
    return runs


@pytest.mark.e2e
def test_a_rank_killed_mid_save_resumes_on_another_host_from_the_last_mirrored_step(
        s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    home = tmp_path / "lab"
    home.mkdir()
    cut = CutSave(s3_bucket, home / "cache" / "store")
    proxy = EndpointProxy(int(s3_endpoint.rsplit(":", 1)[1]), on_request=cut)
    proxy.start()
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "LAB_HOME": str(home),
           "LAB_STORE_URL": f"s3://{s3_bucket}/lab", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("LAB_STORAGE", None)  # local Dagster and MLflow; the outputs on S3

    with (tmp_path / "killed.log").open("w") as out:
        first = subprocess.Popen(MATERIALIZE, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            kill_rank1_held_in_save(first, cut, times=2)  # the first try, then the asset's retry
            first.wait(timeout=600)
        finally:
            end_tree(first)
    killed = (tmp_path / "killed.log").read_text()
    assert first.returncode != 0, killed[-3000:]
    partial, fp = cut.partial, cut.fingerprint
    step_dir = f"{partial}/checkpoint/step-"
    assert f"Loading the checkpoint from {step_dir}{INTERVAL}." in killed  # the retry resumed here from step 10
    cut_step = partial / "checkpoint" / f"step-{STEPS}"
    assert (cut_step / "__0_0.distcp").is_file() and not (cut_step / ".metadata").exists()  # killed mid-save
    objects = bucket_objects(s3_endpoint, s3_bucket)
    assert committed(objects) == {"corpus", "filtered", "tokenizer", "mixed"}
    mirror = f"lab/checkpoint/.partial-{fp}/checkpoint/"
    assert {key.split("/")[4] for key in objects if key.startswith(mirror)} == {f"step-{INTERVAL}"}
    assert f"{mirror}step-{INTERVAL}/.metadata" in objects  # the complete step only; the cut one stayed local

    shutil.rmtree(home / "cache")  # the retry runs on another host: no partial, no cached output
    before_retry = len(proxy.requests)
    with (tmp_path / "retry.log").open("w") as out:
        retry = subprocess.run(MATERIALIZE, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    resumed = (tmp_path / "retry.log").read_text()
    assert retry.returncode == 0, resumed[-3000:]
    assert f"Loading the checkpoint from {step_dir}{INTERVAL}." in resumed

    # The restore read the complete step 10 and nothing of step 20; no object of the checkpoint output, so no
    # manifest, was written before the retry, which wrote its manifest last.
    restored = {request.split("/")[6] for request in proxy.requests[before_retry:]
                if request.startswith(f"GET /{s3_bucket}/{mirror}")}
    assert restored == {f"step-{INTERVAL}"}
    output = f"PUT /{s3_bucket}/lab/checkpoint/{fp}/"
    assert not [request for request in proxy.requests[:before_retry] if request.startswith(output)]
    assert [request for request in proxy.requests[before_retry:] if request.startswith(output)][-1] == \
        f"{output}manifest.json"
    objects = bucket_objects(s3_endpoint, s3_bucket)
    assert "checkpoint" in committed(objects) and not [key for key in objects if "/.partial-" in key]

    # Each try's losses: the first trained steps 1 to 20 uninterrupted; the local retry and the other host resumed
    # from step 10 and gave the same loss at every step after it, bitwise.
    folder = home / "cache" / "store" / "checkpoint" / fp
    rows = [json.loads(line) for line in (folder / "train_steps.jsonl").read_text().splitlines()]
    uninterrupted, local_retry, other_host = tries(rows)
    assert sorted(uninterrupted) == list(range(1, STEPS + 1))
    after_checkpoint = {step: loss for step, loss in uninterrupted.items() if step > INTERVAL}
    assert local_retry == after_checkpoint and other_host == after_checkpoint
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stats"]["checkpoint_steps"] == [INTERVAL, STEPS]
