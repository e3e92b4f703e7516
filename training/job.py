"""A training job: everything the training processes need, saved as one JSON file.

The parent (an orchestration asset) writes the job, then runs `launch_command(job_path)`; every rank reads
the same file. Nothing here imports torch, so writing a job is cheap.
"""

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from training.config import ModelConfig, ParallelConfig, TrainConfig


@dataclass
class TrainJob:
    model: ModelConfig
    train: TrainConfig
    parallel: ParallelConfig
    tokenizer_dir: str  # folder holding a Hugging Face tokenizer.json
    train_tokens: str  # flat uint32 token file: the already-mixed training stream
    output_dir: str  # checkpoints, train_summary.json
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None  # an existing run, owned by the parent; metrics are added to it

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
            }
        )


def launch_command(job_path: str | Path) -> list[str]:
    """The torchrun command that runs `job_path`; run it with the repository root as working directory.

    `--standalone` gives each launch its own rendezvous on a free local port, so two runs on one host
    cannot collide. Only rank 0's output is shown, as torchtitan's own launcher does; a failing rank's
    traceback is still reported by torchrun.
    """
    nproc_per_node = TrainJob.load(job_path).parallel.nproc_per_node
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        "--local-ranks-filter=0",
        "-m",
        "training.train",
        "--job",
        str(job_path),
    ]
