"""Curation and training as Slurm jobs (``filter.executor.kind=slurm``, ``launcher=slurm``) on a throwaway one-node
Slurm (tests/slurm.py), with the store on S3 (moto_server).

``lab materialize`` runs the filter chain with datatrove's Slurm executor (job arrays chained by dependencies), then
submits the checkpoint's rendered script with sbatch and follows it: the training steps reach the Dagster run's log
through Pipes files in the job folder, the outputs are the ones a local run builds (same fingerprints, the filtered
documents byte for byte, the same losses), and no credential of the submitting environment is written. A job that
fails on the node is an error naming its id and log; a run that is stopped (SIGTERM) or killed (SIGKILL) takes its
job with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance
from tiny_training import make_corpus, run_job, step_losses, tiny_job

from curation.filters import build_filtered
from orchestration.config import REPO_ROOT
from orchestration.lab import Lab
from orchestration.store import content_hash
from tests.conftest import bucket_objects, committed
from tests.slurm import SlurmCluster, slurm_cluster  # noqa: F401 (a fixture)
from tests.test_parent_death import job_processes, wait_for
from training.job import TrainJob

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
PASSWORD = "pg-Secret-5e1d0c"  # credentials in the submitting environment: exported to the job, written nowhere
AWS_SECRET = "aws/Secret+Key/fedcba9876543210"
CPUS = min(2, os.cpu_count() or 1)


def slurm_overrides(job_dir: Path) -> list[str]:
    """conf/launcher/slurm.yaml made to fit the test's cluster: no GPU, no partition, the venv on the node's PATH."""
    return ["launcher=slurm", "launcher.slurm.gpu=false", "launcher.slurm.partition=''", "launcher.slurm.env={}",
            f"launcher.slurm.cpus_per_task={CPUS}", "launcher.slurm.time=00:10:00",
            f"launcher.slurm.job_dir={job_dir}", f"launcher.slurm.setup=['export PATH={BIN}:$PATH']"]


def curation_overrides() -> list[str]:
    """datatrove's Slurm executor on the test's cluster, with the venv on the node's PATH."""
    return ["filter.executor.kind=slurm", "filter.executor.slurm.partition=debug",
            "filter.executor.slurm.time=00:10:00", "filter.executor.slurm.mem_per_cpu_gb=1",
            "filter.executor.slurm.poll_seconds=1",
            f"filter.executor.slurm.env_command='export PATH={BIN}:$PATH'"]


def submitting_env(cluster: SlurmCluster, **extra: str) -> dict[str, str]:
    """The environment `lab` runs in: the local profile and store unless ``extra`` names another."""
    env = {name: value for name, value in os.environ.items() if name not in ("LAB_STORAGE", "LAB_STORE_URL")}
    return {**env, **cluster.env(), "PYTHONPATH": str(REPO_ROOT), "PGPASSWORD": PASSWORD,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET, **extra}


def test_lab_curates_and_trains_as_slurm_jobs(slurm_cluster: SlurmCluster, s3_endpoint: str,  # noqa: F811
                                              s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, job_dir = tmp_path / "lab", tmp_path / "jobs"
    overrides = ["experiment=tiny", *curation_overrides(), *slurm_overrides(job_dir)]
    store = {"LAB_HOME": str(home), "LAB_STORE_URL": f"s3://{s3_bucket}/lab", "AWS_ENDPOINT_URL": s3_endpoint}
    result = subprocess.run([sys.executable, "-m", "orchestration.cli", "materialize", *overrides],
                            env=submitting_env(slurm_cluster, **store), cwd=REPO_ROOT, capture_output=True, text=True)
    (tmp_path / "lab.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-4000:]
    # Every output is committed in the bucket, curated and trained on Slurm.
    assert committed(bucket_objects(s3_endpoint, s3_bucket)) >= {"corpus", "filtered", "mixed", "checkpoint", "eval"}

    # The launcher is in no fingerprint: the output is the one `lab materialize experiment=tiny` would build, and
    # a local plan finds it built.
    for name, value in {**store, "DAGSTER_HOME": str(home / "dagster")}.items():
        monkeypatch.setenv(name, value)
    local = Lab(["experiment=tiny"]).item("checkpoint")
    assert local.fingerprint == Lab(overrides).item("checkpoint").fingerprint and local.action == "reuse"
    name = f"lab-tiny-{local.fingerprint[:12]}"

    # The filter chain ran as Slurm job arrays and kept, rejected and held out what a local run does, byte for byte.
    curated = {job["JobName"].removeprefix("lab-curation-") for job in slurm_cluster.jobs()
               if job["JobState"] == "COMPLETED"}
    assert {"kept", "minhash_buckets", "minhash_clusters"} <= curated, curated
    lab = Lab(["experiment=tiny"])
    filtered = lab.item("filtered")
    build_filtered(lab.cfg.filter, lab.store.path("corpus", filtered.upstream["corpus"].fingerprint), tmp_path / "here")
    assert content_hash(tmp_path / "here") == content_hash(lab.store.path("filtered", filtered.fingerprint))

    # It ran as a Slurm job: named in the materialization, known to slurmctld as completed, with its log.
    instance = DagsterInstance.from_config(str(home / "dagster"))
    record = instance.fetch_materializations(AssetKey(["tiny", "checkpoint"]), limit=1).records[0]
    job_id = record.asset_materialization.metadata["slurm_job"].value
    job = slurm_cluster.job(job_id)
    log = job_dir / f"{name}-{job_id}.out"
    assert (job["JobName"], job["JobState"], job["StdOut"]) == (name, "COMPLETED", str(log))
    assert f"JobId={job_id}" in slurm_cluster.log("slurmctld")
    # The steps reached the Dagster run's log through Pipes, as a local run's do.
    messages = [entry.user_message for entry in instance.all_logs(record.run_id)]
    assert any(f"Slurm job {job_id} ({name}) submitted" in message for message in messages)
    steps = [message for message in messages if message.startswith("step ")]
    assert [message.split(":")[0] for message in steps] == ["step 1", *(f"step {s}" for s in range(10, 81, 10))]
    assert "Saving a full checkpoint at last step, step 80" in log.read_text()

    # The same losses as the job run here, without Slurm (and without tracking into the arm's MLflow run).
    shipped = TrainJob.load(job_dir / f"{name}.json")
    here = tmp_path / "here"
    shipped.output_dir, shipped.mlflow_tracking_uri, shipped.mlflow_run_id = str(here), None, None
    run_job(shipped)
    assert step_losses(here) == step_losses(Lab(["experiment=tiny"]).store.path("checkpoint", local.fingerprint))

    # Exported to the job, written nowhere: not in the script, the job file, the job's log, the bucket or lab's output.
    for path in job_dir.iterdir():
        text = path.read_text()
        assert PASSWORD not in text and AWS_SECRET not in text, path
    for key, data in bucket_objects(s3_endpoint, s3_bucket).items():
        assert PASSWORD.encode() not in data and AWS_SECRET.encode() not in data, key
    assert {path.suffix for path in job_dir.iterdir()} == {".sbatch", ".json", ".out"}  # the Pipes files are gone
    assert PASSWORD not in result.stdout + result.stderr and AWS_SECRET not in result.stdout + result.stderr


# One Dagster run of one asset that trains like the checkpoint asset (its launch(), its retry policy), in a process
# of its own so that it can be stopped and killed.
RUN = """
import sys
from pathlib import Path
from dagster import RetryPolicy, asset, materialize
from assets.checkpoint import launch
from orchestration.cluster_launch import LauncherConfig, SlurmConfig
from orchestration.config import ExperimentConfig
from orchestration.resources import StageRun
from training.job import TrainJob

@asset(retry_policy=RetryPolicy(max_retries={retries}))
def train(context):
    slurm = SlurmConfig(cpus_per_task={cpus}, time="00:10:00", job_dir={job_dir!r}, setup=["export PATH={bin}:$PATH"])
    cfg = ExperimentConfig(name="test", launcher=LauncherConfig(kind="slurm", slurm=slurm))
    job = TrainJob.load({job!r})
    launch(StageRun(cfg, Path(job.output_dir), {{}}, {{}}, context, "", "", fingerprint="0123456789abcdef"), job)

result = materialize([train], raise_on_error=False)
for event in result.get_step_failure_events():
    print(event.step_failure_data.error.to_string())
sys.exit(0 if result.success else 1)
"""
NAME = "lab-test-0123456789ab"  # job_name("test", "0123456789abcdef")


def start_run(cluster: SlurmCluster, tmp_path: Path, steps: int, retries: int,
              **train) -> tuple[subprocess.Popen, TrainJob]:
    job = tiny_job(make_corpus(tmp_path), tmp_path / "run", steps=steps)
    for key, value in train.items():
        setattr(job.train, key, value)
    job.save(tmp_path / "job.json")
    code = RUN.format(retries=retries, cpus=CPUS, job_dir=str(tmp_path / "jobs"), bin=BIN,
                      job=str(tmp_path / "job.json"))
    with (tmp_path / "run.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-c", code], env=submitting_env(cluster), cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
    return process, job


def job_id_of(run_log: Path) -> str:
    words = run_log.read_text().split("Slurm job ", 1)[1].split()
    return words[0]


def test_a_job_that_fails_on_the_node_names_its_id_and_log(slurm_cluster: SlurmCluster,  # noqa: F811
                                                           tmp_path: Path) -> None:
    # 7 rows per step on 2 ranks: training refuses it on the node. (The checkpoint asset would retry once.)
    process, _ = start_run(slurm_cluster, tmp_path, steps=5, retries=0, global_batch_size=7)
    assert process.wait(timeout=300) == 1
    output = (tmp_path / "run.log").read_text()
    job_id = job_id_of(tmp_path / "run.log")
    log = tmp_path / "jobs" / f"{NAME}-{job_id}.out"
    assert f"Slurm job {job_id} ({NAME}) ended FAILED, exit code 1:0; its log: {log}" in output
    assert "global_batch_size 7 is not divisible by 2 data-parallel ranks" in output  # the log's tail, in the error
    assert slurm_cluster.job(job_id)["JobState"] == "FAILED"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["terminated", "killed"])
def test_a_stopped_run_cancels_its_job(slurm_cluster: SlurmCluster, tmp_path: Path,  # noqa: F811
                                       stop: signal.Signals) -> None:
    # Hours of training, if left behind; with the checkpoint asset's retry, which a stopped run must not take.
    process, job = start_run(slurm_cluster, tmp_path, steps=100_000, retries=1, checkpoint_interval=100_000)
    steps = Path(job.output_dir) / "train_steps.jsonl"
    job_file = tmp_path / "jobs" / f"{NAME}.json"
    try:
        wait_for(lambda: steps.exists() and steps.stat().st_size > 0, "the job training", limit=300)
        job_id = job_id_of(tmp_path / "run.log")
        assert slurm_cluster.job(job_id)["JobState"] == "RUNNING" and job_processes(job_file)
        process.send_signal(stop)
        process.wait(timeout=120)
        wait_for(lambda: slurm_cluster.job(job_id)["JobState"] == "CANCELLED", "the job cancelled", limit=60)
        wait_for(lambda: not job_processes(job_file), "torchrun and the ranks to end", limit=120)
    finally:
        process.kill()
        for leftover in job_processes(job_file):
            leftover.kill()
    if stop == signal.SIGTERM:  # the run cancelled it itself, said so, and failed without a retry
        output = (tmp_path / "run.log").read_text()
        assert f"Slurm job {job_id} cancelled (scancel)" in output and "not retried" in output
        assert process.returncode == 1 and output.count(" submitted: script ") == 1
