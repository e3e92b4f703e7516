"""A training job: everything the training processes need, saved as one JSON file.

The parent (an orchestration asset) writes the job, then runs `launch_command(job_path)`; every rank reads
the same file. Nothing here imports torch, so writing a job is cheap.
"""

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from training.config import INIT_MODES, InitConfig, ModelConfig, ParallelConfig, TrainConfig


@dataclass
class TrainJob:
    model: ModelConfig
    train: TrainConfig
    parallel: ParallelConfig
    tokenizer_dir: str  # folder holding a Hugging Face tokenizer.json
    train_tokens: str  # flat uint32 token file: the already-mixed training stream
    output_dir: str  # checkpoints, train_summary.json, train_steps.jsonl
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None  # an existing run, owned by the parent; metrics are added to it
    init: InitConfig | None = None  # start from a parent checkpoint; None: from scratch

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "TrainJob":
        raw = json.loads(Path(path).read_text())
        return cls(
            **{
                **raw,
                "model": ModelConfig(**raw["model"]),
                "train": TrainConfig(**raw["train"]),
                "parallel": ParallelConfig(**raw["parallel"]),
                "init": InitConfig(**raw["init"]) if raw.get("init") else None,
            }
        )


def check_init(init: InitConfig) -> None:
    """A clear error for an init section the trainer could not use (the folder itself is checked when loaded)."""
    if init.mode not in INIT_MODES:
        raise ValueError(f"init.mode {init.mode!r} is not one of {', '.join(INIT_MODES)}")
    if not Path(init.checkpoint).is_absolute():
        raise ValueError(f"init.checkpoint must be an absolute path to a step-N folder, got {init.checkpoint!r}")


def rendezvous_flags(parallel: ParallelConfig) -> list[str]:
    """torchrun's rendezvous flags: a private local rendezvous for one node, the configured one for several."""
    if parallel.nnodes == 1:
        return ["--standalone"]
    missing = [name for name in ("rdzv_endpoint", "rdzv_id") if not getattr(parallel, name)]
    if missing:
        raise ValueError(f"a {parallel.nnodes}-node run needs parallel.{' and parallel.'.join(missing)}")
    flags = [
        f"--nnodes={parallel.nnodes}",
        f"--rdzv_backend={parallel.rdzv_backend}",
        f"--rdzv_endpoint={parallel.rdzv_endpoint}",
        f"--rdzv_id={parallel.rdzv_id}",
    ]
    if parallel.rdzv_backend == "static":
        flags.append(f"--node_rank={parallel.node_rank}")
    return flags


def launch_command(job_path: str | Path, seed_checkpoint: bool = False) -> list[str]:
    """The torchrun command that runs `job_path` on this node; run it with the repository root as working directory.

    One node: `--standalone` gives each launch its own rendezvous on a free local port, so two runs on one host
    cannot collide. Several nodes: every node runs this same command with the same job. Only local rank 0's
    output is shown, as torchtitan's own launcher does; a failing rank's traceback is still reported by torchrun.
    `seed_checkpoint`: one local rank writes the job's initial weights as checkpoint step-0 (see training.train).
    torchrun runs under training.parent_death, so it (and then its ranks) dies when the process that ran it dies.
    """
    parallel = TrainJob.load(job_path).parallel
    if seed_checkpoint:
        parallel = ParallelConfig(nproc_per_node=1)
    return [
        sys.executable,
        "-m",
        "training.parent_death",
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous_flags(parallel),
        f"--nproc_per_node={parallel.nproc_per_node}",
        "--local-ranks-filter=0",
        "-m",
        "training.train",
        "--job",
        str(job_path),
        *(["--seed-checkpoint"] if seed_checkpoint else []),
    ]
