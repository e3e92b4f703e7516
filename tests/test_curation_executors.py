"""Executors from config: local by default, Slurm and Ray with their options; none of it in a fingerprint."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

from curation.config import ExecutorConfig, FilterConfig, HeldoutConfig, RayOptions, SlurmOptions
from curation.documents import make_document, write_documents
from curation.executors import Stage, chain, make_executor
from curation.filters import build_filtered
from orchestration.compose import compose_experiment
from orchestration.lineage import STAGE_BY_NAME, config_version
from orchestration.store import content_hash
from tests.slurm import SlurmCluster, slurm_cluster  # noqa: F401 (a fixture)
from tests.test_filters import MIT, PROSE

STAGES = [Stage("first", [], tasks=4), Stage("second", [], tasks=2)]


def test_local_is_the_default_and_runs_stages_in_turn(tmp_path: Path) -> None:
    first, second = chain(ExecutorConfig(), STAGES, workers=3, logs=tmp_path)
    assert isinstance(first, LocalPipelineExecutor) and isinstance(second, LocalPipelineExecutor)
    assert (first.tasks, first.workers, second.tasks, second.workers) == (4, 3, 2, 2)
    assert second.depends is None  # local stages run one after the other, not through datatrove's depends
    assert str(first.logging_dir.path).endswith("first")


def test_slurm_gets_its_options_and_a_dependency_chain(tmp_path: Path) -> None:
    cfg = ExecutorConfig(kind="slurm", slurm=SlurmOptions(
        partition="cpu", time="01:30:00", cpus_per_task=4, mem_per_cpu_gb=3, qos="low", job_name="curate",
        env_command="source venv/bin/activate", sbatch_args={"account": "lm"}))
    first, second = chain(cfg, STAGES, workers=8, logs=tmp_path)
    assert isinstance(second, SlurmPipelineExecutor) and second.depends is first
    assert (first.partition, first.time, first.cpus_per_task, first.mem_per_cpu_gb, first.qos) == (
        "cpu", "01:30:00", 4, 3, "low")
    assert (first.tasks, first.workers, first.job_name) == (4, 4, "curate-first")
    assert first.env_command == "source venv/bin/activate"
    directives = first.get_sbatch_args(max_array=4)  # what sbatch would be given; nothing is submitted
    assert {k: directives[k] for k in ("partition", "time", "cpus-per-task", "mem-per-cpu", "account", "array")} == {
        "partition": "cpu", "time": "01:30:00", "cpus-per-task": 4, "mem-per-cpu": "3G", "account": "lm",
        "array": "0-3%4"}
    with pytest.raises(ValueError, match="filter.executor.slurm.partition"):
        make_executor(ExecutorConfig(kind="slurm"), STAGES[0], 1, tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed here")
def test_ray_without_ray_names_the_install(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="pip install ray"):
        make_executor(ExecutorConfig(kind="ray"), STAGES[0], 1, tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_gets_its_options(tmp_path: Path) -> None:
    from datatrove.executor.ray import RayPipelineExecutor

    cfg = ExecutorConfig(kind="ray", ray=RayOptions(cpus_per_task=2, mem_per_cpu_gb=1.5))
    first, second = chain(cfg, STAGES, workers=2, logs=tmp_path)
    assert isinstance(second, RayPipelineExecutor) and second.depends is first
    assert (first.cpus_per_task, first.mem_per_cpu_gb, first.workers) == (2, 1.5, 2)


def test_unknown_kind_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="local, slurm, ray"):
        make_executor(ExecutorConfig(kind="dask"), STAGES[0], 1, tmp_path)


def test_executor_and_workers_stay_out_of_the_fingerprint() -> None:
    spec = STAGE_BY_NAME["filtered"]
    base = config_version(spec, compose_experiment(["experiment=tiny"])[0])
    moved = compose_experiment(["experiment=tiny", "filter.workers=8", "filter.executor.kind=slurm",
                                "filter.executor.slurm.partition=gpu", "filter.executor.ray.cpus_per_task=4"])[0]
    assert config_version(spec, moved) == base
    changed = compose_experiment(["experiment=tiny", "filter.dedup.ngram_size=7"])[0]
    assert config_version(spec, changed) != base


def test_filtered_on_slurm_is_the_same_bytes_as_locally(slurm_cluster: SlurmCluster, tmp_path: Path,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """datatrove's Slurm executor on a throwaway one-node Slurm: the whole filter chain (rules, exact and MinHash
    dedup over two tasks) as job arrays chained by dependencies, with the bytes of the local run."""
    licenses = [MIT.format(year=year, holder=holder) for year, holder in ((2020, "Alpha"), (2021, "Beta"))]
    (tmp_path / "corpus").mkdir()
    write_documents(tmp_path / "corpus" / "documents-00000.jsonl.gz",
                    [make_document(licenses[0], "license", "a0"), make_document(PROSE, "docs", "story.md")])
    write_documents(tmp_path / "corpus" / "documents-00001.jsonl.gz",
                    [make_document(licenses[0], "license", "b0"), make_document(licenses[1], "license", "b1")])
    cfg = FilterConfig(heldout=HeldoutConfig(fraction=0, min_documents=0, min_tokens=0))
    cfg.dedup.num_buckets = 2
    build_filtered(cfg, tmp_path / "corpus", tmp_path / "local")

    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env()["SLURM_CONF"])
    cfg.executor = ExecutorConfig(kind="slurm", slurm=SlurmOptions(
        partition="debug", time="00:10:00", mem_per_cpu_gb=1, poll_seconds=1, timeout_hours=0.1,
        env_command=f"export PATH={Path(sys.executable).parent}:$PATH"))
    build_filtered(cfg, tmp_path / "corpus", tmp_path / "slurm")
    assert content_hash(tmp_path / "slurm") == content_hash(tmp_path / "local")
    ran = {job["JobName"].removeprefix("lab-curation-") for job in slurm_cluster.jobs()
           if job["JobState"] == "COMPLETED"}
    assert {"kept", "minhash_buckets", "minhash_clusters"} <= ran
