"""Which datatrove executor runs the curation pipeline: local processes (default), Slurm or Ray, from config.

A pipeline is a chain of stages (one datatrove executor each, each depending on the one before). The same chain
runs on every executor; only where its tasks run changes, so the executor choice and worker counts never enter a
fingerprint. On Slurm and Ray the stage's output folder must be on storage every node sees (a shared file system
or s3://), since datatrove's tasks read and write it directly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.executor.base import PipelineExecutor
from datatrove.executor.ray import RayPipelineExecutor

from curation.config import ExecutorConfig


@dataclass
class Stage:
    """One executor run: a datatrove pipeline over ``tasks`` tasks."""

    name: str
    pipeline: list
    tasks: int = 1


KINDS = ("local", "slurm", "ray")


def make_executor(cfg: ExecutorConfig, stage: Stage, workers: int, logging_dir: Path,
                  depends: PipelineExecutor | None = None) -> PipelineExecutor:
    """The datatrove executor of ``cfg.kind`` for one stage; ``workers``: tasks running at once."""
    common = dict(tasks=stage.tasks, workers=max(1, min(workers, stage.tasks)), logging_dir=str(logging_dir),
                  depends=depends, skip_completed=False)
    if cfg.kind == "local":
        return LocalPipelineExecutor(stage.pipeline, **common)
    if cfg.kind == "slurm":
        slurm = cfg.slurm
        if not slurm.partition:
            raise ValueError("filter.executor.kind=slurm needs a partition: set filter.executor.slurm.partition")
        return SlurmPipelineExecutor(
            stage.pipeline, **common, time=slurm.time, partition=slurm.partition,
            cpus_per_task=slurm.cpus_per_task, mem_per_cpu_gb=slurm.mem_per_cpu_gb, qos=slurm.qos,
            job_name=f"{slurm.job_name}-{stage.name}", env_command=slurm.env_command or None,
            sbatch_args=dict(slurm.sbatch_args),
        )
    if cfg.kind == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ImportError("filter.executor.kind=ray needs Ray, which is not installed: pip install ray")
        return RayPipelineExecutor(stage.pipeline, **common, cpus_per_task=cfg.ray.cpus_per_task,
                                   mem_per_cpu_gb=cfg.ray.mem_per_cpu_gb)
    raise ValueError(f"filter.executor.kind='{cfg.kind}' is not known; valid: {', '.join(KINDS)}")


def chain(cfg: ExecutorConfig, stages: list[Stage], workers: int, logs: Path) -> list[PipelineExecutor]:
    """One executor per stage. On Slurm and Ray each depends on the previous, so running the last submits (or runs)
    them all; locally they simply run one after the other."""
    executors: list[PipelineExecutor] = []
    for stage in stages:
        depends = executors[-1] if executors and cfg.kind != "local" else None
        executors.append(make_executor(cfg, stage, workers, logs / stage.name, depends))
    return executors


def run_chain(cfg: ExecutorConfig, stages: list[Stage], workers: int, logs: Path) -> list[dict]:
    """Run the stages in order on the configured executor; returns datatrove's step statistics of every stage."""
    executors = chain(cfg, stages, workers, logs)
    if cfg.kind == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(address=cfg.ray.address or None)
    # datatrove logs every step to stderr at INFO; keep the console readable; its log files stay under ``logs``.
    with contextlib.redirect_stderr(io.StringIO()):
        for executor in executors if cfg.kind == "local" else executors[-1:]:
            executor.run()
    if cfg.kind == "slurm":  # sbatch returns at once: wait for the last stage's merged statistics
        _wait_for(logs / stages[-1].name / "stats.json", cfg.slurm.poll_seconds, cfg.slurm.timeout_hours)
    return [step for stage in stages for step in json.loads((logs / stage.name / "stats.json").read_text())]


def _wait_for(path: Path, poll_seconds: float, timeout_hours: float) -> None:
    deadline = time.monotonic() + timeout_hours * 3600
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Slurm jobs did not finish within {timeout_hours} h (no {path.name} yet)")
        time.sleep(poll_seconds)
