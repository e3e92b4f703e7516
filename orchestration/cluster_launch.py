"""The checkpoint's training job as a cluster would run it: a Kubernetes indexed Job, or a Slurm batch script.

Locally the checkpoint asset runs ``training.job.launch_command``: torchrun on this node. On a cluster every node
runs that same torchrun command (built by the same function), with a c10d rendezvous on the first node: on
Kubernetes, pod 0 of an indexed Job, named through a headless Service; on Slurm, the first host of the allocation.
The job file goes with the spec (a ConfigMap, or a heredoc in the script), so nothing but the lab home's paths must
be shared.

Credentials are never rendered: Kubernetes reads them from Secrets by reference (``secretKeyRef``, ``envFrom``),
Slurm from the environment ``sbatch`` exports. Nothing here reads the environment.

The launcher is not part of any stage's config slice: where training runs changes no output bytes.

    python -m orchestration.cluster_launch experiment=tiny launcher=kubernetes   print the spec
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from training.job import TrainJob, launch_command

LAUNCHERS = ("local", "kubernetes", "slurm")
# Plain environment names that look like credentials: they belong in secret_env (Kubernetes) or the submitting
# environment (Slurm), never in a config value that is printed and logged.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|(^|_)KEY($|_)", re.IGNORECASE)
JOB_FILE_IN_POD = "/etc/lab/job.json"


@dataclass
class KubernetesConfig:
    namespace: str = "default"
    image: str = ""  # this repository with its locked environment installed; the working directory is its root
    cpu: str = "8"  # per pod (one pod per node)
    memory: str = "32Gi"
    gpu: bool = False  # one nvidia.com/gpu per rank: parallel.nproc_per_node per pod
    # A ReadWriteMany claim holding the lab home, mounted at the lab home's path in every pod; empty: none.
    lab_home_claim: str = ""
    env: dict[str, str] = field(default_factory=dict)  # plain settings, e.g. PGHOST, LAB_STORAGE; never a secret
    secret_env: dict[str, str] = field(default_factory=dict)  # NAME: "secret/key", read by reference
    env_from_secrets: list[str] = field(default_factory=list)  # whole Secrets as environment (envFrom)
    rdzv_port: int = 29500


@dataclass
class SlurmConfig:
    partition: str = ""
    account: str = ""
    time: str = "04:00:00"
    gpu: bool = False  # one GPU per rank: --gpus-per-node=parallel.nproc_per_node
    cpus_per_task: int = 8  # one task (torchrun) per node
    mem: str = "0"  # per node; "0": all of it
    job_dir: str = ""  # a folder every node sees: the job file and the logs
    setup: list[str] = field(default_factory=list)  # shell lines before srun, e.g. "source .venv/bin/activate"
    env: dict[str, str] = field(default_factory=dict)  # plain settings; credentials come from sbatch's environment
    rdzv_port: int = 29500


@dataclass
class LauncherConfig:
    """Where the checkpoint's training runs: on this node (local), on Kubernetes, or on Slurm."""

    kind: str = "local"
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


def check_launch(launcher: LauncherConfig, job: TrainJob) -> None:
    """A clear error, naming the fix, for a launch that a cluster would refuse or that would leak a credential."""
    if launcher.kind not in LAUNCHERS:
        raise ValueError(f"launcher.kind={launcher.kind!r}; choose one of {', '.join(LAUNCHERS)}")
    engine = getattr(launcher, launcher.kind, None)
    if engine is None:
        return
    if job.parallel.nnodes > 1 and job.parallel.rdzv_backend != "c10d":
        raise ValueError("a cluster launch finds its nodes with the c10d rendezvous: set parallel.rdzv_backend=c10d")
    leaking = sorted(name for name in engine.env if SECRET_NAME.search(name))
    if leaking:
        raise ValueError(f"launcher.{launcher.kind}.env names {', '.join(leaking)}, which look like credentials: "
                         "on Kubernetes give them in secret_env (NAME: secret/key); on Slurm export them before sbatch")
    if urlsplit(job.mlflow_tracking_uri or "").password:
        raise ValueError("the MLflow tracking URI holds a password, which the spec would carry: leave it out of the "
                         "URI (the shared profile's driver reads PGPASSWORD from the environment)")
    if launcher.kind == "kubernetes" and not engine.image:
        raise ValueError("launcher.kubernetes.image is empty: name the training image (this repository, installed)")
    if launcher.kind == "slurm" and not engine.job_dir:
        raise ValueError("launcher.slurm.job_dir is empty: name a folder that every node sees")


def job_name(experiment: str, fingerprint: str) -> str:
    """A DNS label (Kubernetes object and pod host names): lab-<experiment>-<fingerprint>, at most 55 characters so
    that an indexed pod's "-<index>" still fits."""
    slug = re.sub(r"[^a-z0-9-]+", "-", experiment.lower()).strip("-")[:32].strip("-")
    return f"lab-{slug}-{fingerprint[:12]}".rstrip("-")


def with_rendezvous(job: TrainJob, endpoint: str, run_id: str) -> TrainJob:
    """The job with the cluster's rendezvous (node 0); one node keeps torchrun's private standalone rendezvous."""
    if job.parallel.nnodes == 1:
        return job
    parallel = dataclasses.replace(job.parallel, rdzv_endpoint=endpoint, rdzv_id=run_id)
    return dataclasses.replace(job, parallel=parallel)


def job_text_and_command(job: TrainJob, job_path: str) -> tuple[str, list[str]]:
    """The job file's text and the torchrun command a node runs, both from training.job's own code.

    ``launch_command`` wraps torchrun in this machine's interpreter and ``training.parent_death`` (the local
    launcher's way to take the ranks down with it); on a node the pod or the Slurm step owns the processes, so the
    node runs the torchrun part with its own ``python`` and the job file at ``job_path``.
    """
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "job.json"
        job.save(local)
        text, command = local.read_text(), launch_command(local)
    torchrun = command[command.index("torch.distributed.run") - 1:]  # from torchrun's "-m"
    return text, ["python", *[job_path if arg == str(local) else arg for arg in torchrun]]


def kubernetes_spec(launcher: KubernetesConfig, job: TrainJob, name: str, lab_home: str) -> list[dict]:
    """A headless Service (the pods' DNS names), a ConfigMap (the job file) and an indexed Job (one pod per node)."""
    job = with_rendezvous(job, f"{name}-0.{name}:{launcher.rdzv_port}", name)
    text, command = job_text_and_command(job, JOB_FILE_IN_POD)
    nodes, labels = job.parallel.nnodes, {"app.kubernetes.io/part-of": "lab", "lab/job": name}
    meta = {"name": name, "namespace": launcher.namespace, "labels": labels}
    env = [{"name": k, "value": v} for k, v in launcher.env.items()]
    for variable, reference in launcher.secret_env.items():
        secret, _, key = reference.partition("/")
        env.append({"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key or variable}}})
    resources = {"cpu": launcher.cpu, "memory": launcher.memory}
    if launcher.gpu:
        resources["nvidia.com/gpu"] = job.parallel.nproc_per_node
    mounts = [{"name": "job", "mountPath": str(Path(JOB_FILE_IN_POD).parent), "readOnly": True},
              {"name": "shm", "mountPath": "/dev/shm"}]  # NCCL and the data loader need more than the default 64 MiB
    volumes = [{"name": "job", "configMap": {"name": name}}, {"name": "shm", "emptyDir": {"medium": "Memory"}}]
    if launcher.lab_home_claim:
        mounts.append({"name": "lab-home", "mountPath": lab_home})
        volumes.append({"name": "lab-home", "persistentVolumeClaim": {"claimName": launcher.lab_home_claim}})
    container = {"name": "trainer", "image": launcher.image, "command": command, "env": env,
                 "envFrom": [{"secretRef": {"name": secret}} for secret in launcher.env_from_secrets],
                 "resources": {"requests": resources, "limits": resources},
                 "ports": [{"containerPort": launcher.rdzv_port, "name": "rendezvous"}], "volumeMounts": mounts}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"lab/job": name},
                        "ports": [{"port": launcher.rdzv_port, "name": "rendezvous"}]}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"job.json": text}}
    indexed_job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {
        "completionMode": "Indexed", "completions": nodes, "parallelism": nodes,
        "backoffLimit": 0,  # a failed attempt is retried by Dagster's run retries, which resume from a checkpoint
        "template": {"metadata": {"labels": labels}, "spec": {
            "subdomain": name,  # with the headless Service: pod i is <name>-i.<name>, pod 0 the rendezvous host
            "restartPolicy": "Never", "containers": [container], "volumes": volumes}}}}
    return [service, config_map, indexed_job]


def slurm_script(launcher: SlurmConfig, job: TrainJob, name: str) -> str:
    """An sbatch script: one torchrun per node (srun), meeting at a c10d rendezvous on the allocation's first host."""
    # The job file keeps these names as written (a quoted heredoc); torchrun gets them expanded, on its command line.
    job = with_rendezvous(job, f"$head_node:{launcher.rdzv_port}", "$SLURM_JOB_ID")
    job_dir = launcher.job_dir.rstrip("/")
    job_path = f"{job_dir}/{name}.json"
    text, command = job_text_and_command(job, job_path)
    header = {"job-name": name, "nodes": job.parallel.nnodes, "ntasks-per-node": 1,
              "gpus-per-node": job.parallel.nproc_per_node if launcher.gpu else None,
              "cpus-per-task": launcher.cpus_per_task, "mem": launcher.mem, "time": launcher.time,
              "partition": launcher.partition or None, "account": launcher.account or None,
              "output": f"{job_dir}/%x-%j.out"}
    # Shell variables ($head_node, $SLURM_JOB_ID) expand inside double quotes; everything else is quoted as is.
    words = [f'"{word}"' if "$" in word else shlex.quote(word) for word in command]
    lines = ["#!/bin/bash", *(f"#SBATCH --{key}={value}" for key, value in header.items() if value is not None),
             "set -euo pipefail",
             "# Credentials (PGPASSWORD, AWS_*) come from the environment sbatch exports; none is written here.",
             *(f"export {key}={shlex.quote(value)}" for key, value in launcher.env.items()),
             *launcher.setup,
             f"mkdir -p {shlex.quote(job_dir)}",
             f"cat > {shlex.quote(job_path)} <<'LAB_JOB'", text.rstrip("\n"), "LAB_JOB",
             'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
             f"srun --ntasks-per-node=1 {' '.join(words)}"]
    return "\n".join(lines) + "\n"


def render(launcher: LauncherConfig, job: TrainJob, name: str, lab_home: str) -> str:
    """The spec a launcher submits, as text: Kubernetes YAML, or a Slurm batch script."""
    check_launch(launcher, job)
    if launcher.kind == "kubernetes":
        return yaml.safe_dump_all(kubernetes_spec(launcher.kubernetes, job, name, lab_home), sort_keys=False)
    if launcher.kind == "slurm":
        return slurm_script(launcher.slurm, job, name)
    _, command = job_text_and_command(job, "job.json")
    return f"# launcher=local: the checkpoint asset runs torchrun on this node\n{shlex.join(command)}\n"


def main(argv: list[str]) -> int:
    """Print the launch spec of an experiment's checkpoint (its inputs must be materialized: the spec names them)."""
    from assets.checkpoint import train_job
    from orchestration.lab import Lab
    from orchestration.services import mlflow_tracking_uri

    try:
        lab = Lab(argv)
        item = lab.item("checkpoint")
        if item.upstream is None:
            raise ValueError(f"the checkpoint's inputs are not materialized yet ({item.reason}); the spec names them: "
                             f"`lab materialize {' '.join(argv)}` builds them")
        paths = {stage: lab.store.path(m.stage, m.fingerprint) for stage, m in item.upstream.items()}
        parent_step = (item.config or {}).get("parent", {}).get("step")
        # Training writes where the asset has it write: the partial folder, committed (renamed) once it is done.
        output = lab.store.partial_path("checkpoint", item.fingerprint)
        job = train_job(lab.cfg, paths, output, parent_step, mlflow_tracking_uri(lab.cfg.storage, lab.home))
        print(render(lab.cfg.launcher, job, job_name(lab.cfg.name, item.fingerprint), str(lab.home)), end="")
    except ValueError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
