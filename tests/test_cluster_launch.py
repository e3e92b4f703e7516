"""The checkpoint's training job rendered for Kubernetes and Slurm, from config: image, command, resources,
rendezvous, and an environment without secret values."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from assets.checkpoint import train_job
from orchestration.cluster_launch import job_name, job_text_and_command, main, render
from orchestration.config import load_experiment
from orchestration.experiments import Arm, Experiment, record
from orchestration.lineage import STAGES
from orchestration.resources import placed
from training.job import TrainJob, launch_command

GPU_NODES = ["experiment=tiny", "parallel=gpu_fsdp", "parallel.nnodes=2"]
PASSWORD = "pg-Secret-7f3a9c"  # what a credential in the environment looks like
AWS_SECRET = "aws/Secret+Key/0123456789abcdef"


@pytest.fixture(autouse=True)
def credentials_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)


def job_for(overrides: list[str]) -> tuple[TrainJob, object]:
    cfg = load_experiment(overrides)
    store = Path("/lab/store")
    upstream = {"tokenizer": store / "tokenizer" / "t0", "mixed": store / "mixed" / "m0"}
    return train_job(cfg, upstream, store / "checkpoint" / "c0", None, "postgresql+psycopg2:///lab_mlflow"), cfg


def torchrun_part(job: TrainJob, tmp_path: Path) -> list[str]:
    """What training.job.launch_command runs locally, from torchrun's -m on."""
    job.save(tmp_path / "job.json")
    command = launch_command(tmp_path / "job.json")
    return command[command.index("torch.distributed.run") - 1:]


def test_kubernetes_indexed_job(tmp_path: Path) -> None:
    job, cfg = job_for([*GPU_NODES, "launcher=kubernetes"])
    name = job_name("tiny", "0123456789abcdef")
    service, config_map, indexed = yaml.safe_load_all(render(cfg.launcher, job, name, "/lab"))
    assert service["spec"]["clusterIP"] == "None" and indexed["spec"]["template"]["spec"]["subdomain"] == name
    spec = indexed["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == cfg.launcher.kubernetes.image
    assert container["resources"]["limits"] == {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": 8}
    endpoint = f"{name}-0.{name}:29500"
    command = container["command"]
    assert command[:3] == ["python", "-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", f"--rdzv_id={name}",
            "--nproc_per_node=8"} <= set(command)
    assert command[-4:] == ["-m", "training.train", "--job", "/etc/lab/job.json"]
    # The job file in the ConfigMap is the job, with the rendezvous; the command is launch_command's, for it.
    (tmp_path / "job.json").write_text(config_map["data"]["job.json"])
    shipped = TrainJob.load(tmp_path / "job.json")
    assert (shipped.parallel.rdzv_endpoint, shipped.model, shipped.train) == (endpoint, job.model, job.train)
    local = torchrun_part(shipped, tmp_path)
    assert command[1:] == ["/etc/lab/job.json" if arg == str(tmp_path / "job.json") else arg for arg in local]
    env = {item["name"]: item for item in container["env"]}
    assert env["PGPASSWORD"] == {"name": "PGPASSWORD",
                                 "valueFrom": {"secretKeyRef": {"name": "lab-postgres", "key": "password"}}}
    assert env["PGHOST"]["value"] == "postgres.lab.svc.cluster.local"
    assert container["envFrom"] == [{"secretRef": {"name": "lab-s3-credentials"}}]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["lab-home"] == "/lab" and mounts["job"] == "/etc/lab"


def test_slurm_batch_script(tmp_path: Path) -> None:
    job, cfg = job_for([*GPU_NODES, "launcher=slurm", "launcher.slurm.account=proj42"])
    script = render(cfg.launcher, job, "lab-tiny-0123", "/lab")
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for expected in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--time=24:00:00", "--partition=gpu",
                     "--account=proj42", "--cpus-per-task=64", "--output=/shared/lab/jobs/%x-%j.out"):
        assert f"#SBATCH {expected}" in header
    srun = script.splitlines()[-1]
    assert srun.startswith("srun --ntasks-per-node=1 python -m torch.distributed.run --nnodes=2 ")
    assert '"--rdzv_endpoint=$head_node:29500"' in srun and '"--rdzv_id=$SLURM_JOB_ID"' in srun
    assert srun.endswith("-m training.train --job /shared/lab/jobs/lab-tiny-0123.json")
    text = script.split("<<'LAB_JOB'\n", 1)[1].split("\nLAB_JOB\n", 1)[0]
    (tmp_path / "job.json").write_text(text)
    assert TrainJob.load(tmp_path / "job.json").train_tokens == "/lab/store/mixed/m0/train_stream.bin"
    if shutil.which("bash"):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_one_node_keeps_the_standalone_rendezvous(tmp_path: Path) -> None:
    job, cfg = job_for(["experiment=tiny", "launcher=kubernetes", "launcher.kubernetes.gpu=false"])
    _, _, indexed = yaml.safe_load_all(render(cfg.launcher, job, "lab-tiny-0", "/lab"))
    container = indexed["spec"]["template"]["spec"]["containers"][0]
    assert "--standalone" in container["command"] and not any("rdzv" in arg for arg in container["command"])
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert job_text_and_command(job, "job.json")[1][1:] == torchrun_part(job, tmp_path)[:-1] + ["job.json"]


def test_no_credential_from_the_environment_is_rendered() -> None:
    for overrides in ([*GPU_NODES, "launcher=kubernetes"], [*GPU_NODES, "launcher=slurm"], ["experiment=tiny"]):
        job, cfg = job_for(overrides)
        text = render(cfg.launcher, job, "lab-tiny-0", "/lab")
        assert PASSWORD not in text and AWS_SECRET not in text and "AWS_SECRET" not in text


@pytest.mark.parametrize("override, message", [
    ("+launcher.kubernetes.env.PGPASSWORD=x", "secret_env"),
    ("+launcher.kubernetes.env.AWS_SECRET_ACCESS_KEY=x", "secret_env"),
    ("launcher.kubernetes.image=''", "launcher.kubernetes.image"),
    ("parallel.rdzv_backend=static", "rdzv_backend=c10d"),
    ("launcher.kind=lsf", "choose one of local, kubernetes, slurm"),
])
def test_a_bad_launch_is_refused_naming_the_fix(override: str, message: str) -> None:
    job, cfg = job_for([*GPU_NODES, "launcher=kubernetes", override])
    with pytest.raises(ValueError, match=message):
        render(cfg.launcher, job, "lab-tiny-0", "/lab")


def test_a_password_in_the_tracking_uri_is_refused() -> None:
    job, cfg = job_for([*GPU_NODES, "launcher=slurm"])
    job.mlflow_tracking_uri = f"postgresql+psycopg2://lab:{PASSWORD}@db/lab_mlflow"
    with pytest.raises(ValueError, match="holds a password"):
        render(cfg.launcher, job, "lab-tiny-0", "/lab")


def test_the_launcher_is_in_no_stage_identity() -> None:
    local = load_experiment(GPU_NODES)
    for launcher in ("kubernetes", "slurm"):
        cluster = load_experiment([*GPU_NODES, f"launcher={launcher}"])
        assert cluster.launcher != local.launcher
        for spec in STAGES:
            assert spec.config_slice(cluster) == spec.config_slice(local), spec.name


def test_the_spec_needs_the_checkpoints_inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    assert main(["experiment=tiny", "launcher=slurm"]) == 2
    assert "not materialized yet" in capsys.readouterr().err


def test_the_asking_arm_decides_where_a_shared_output_is_built(tmp_path: Path) -> None:
    """`experiment=tiny launcher=slurm` shares every output with conf's tiny (no fingerprint holds the launcher), so
    tiny owns the assets; a run for the asking experiment still builds them where, and as, it says."""
    where = [*GPU_NODES, "launcher=slurm", "filter.executor.kind=slurm", "filter.workers=8"]
    record(tmp_path, Experiment("on_slurm", [Arm("a", where), Arm("b", [*where, "train.lr=0.1"])]))
    owner = load_experiment(["experiment=tiny"])
    for tags in ({"lab/experiment": "on_slurm", "lab/arm": "b"}, {"lab/experiment": "on_slurm"}):  # b, or the first
        cfg = placed(owner, tmp_path, tags)
        assert (cfg.launcher.kind, cfg.parallel.nnodes, cfg.filter.executor.kind, cfg.filter.workers) == (
            "slurm", 2, "slurm", 8)
        assert (cfg.model, cfg.train, cfg.filter.dedup) == (owner.model, owner.train, owner.filter.dedup)
    assert placed(owner, tmp_path, {}) == owner  # a run from the UI: the owner's
