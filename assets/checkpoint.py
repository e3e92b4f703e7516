"""``checkpoint``: a TorchTitan training run on the mixed stream, launched with torchrun through Dagster Pipes."""

import json
import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, PipesSubprocessClient, asset

from evaluation.perplexity import list_checkpoints
from evaluation.plots import plot_curves
from orchestration.config import REPO_ROOT
from orchestration.resources import LabResource, StageResult, StageRun
from training.job import TrainJob, launch_command
from training.schedules import plot_schedule


def build(run: StageRun) -> StageResult:
    cfg = run.cfg
    job = TrainJob(
        model=cfg.model, train=cfg.train, parallel=cfg.parallel,
        tokenizer_dir=str(run.upstream["tokenizer"]),
        train_tokens=str(run.upstream["mixed"] / "train_stream.bin"),
        output_dir=str(run.output),
        mlflow_tracking_uri=run.mlflow_tracking_uri, mlflow_run_id=run.mlflow_run_id,
    )
    # The job file names machine paths, so it lives outside the versioned output.
    with tempfile.TemporaryDirectory() as scratch:
        job_path = Path(scratch) / "job.json"
        job.save(job_path)
        PipesSubprocessClient().run(context=run.context, command=launch_command(job_path), cwd=str(REPO_ROOT))
    summary = json.loads((run.output / "train_summary.json").read_text())
    plot_curves({"train": summary["loss_curve"]}, run.output / "loss_curve.png", title=f"{cfg.name}: training loss",
                ylabel="loss (nats/token)")
    plot_schedule(cfg.train, run.output / "lr_schedule.png")
    stats = {k: v for k, v in summary.items() if k != "loss_curve"}
    stats["vocab_size"] = run.upstream_manifests["tokenizer"].stats["vocab_size"]
    stats["checkpoint_steps"] = sorted(list_checkpoints(run.output))  # what children may start or branch from
    return StageResult(
        stats,
        {"first_loss": summary["first_loss"], "final_loss": summary["final_loss"],
         "tokens_per_second": summary["tokens_per_second"]},
        artifacts=["loss_curve.png", "lr_schedule.png", "train_summary.json"],
    )


@asset(deps=["tokenizer", "mixed"], group_name="lineage",
       description="TorchTitan training (torchrun, FSDP over gloo on CPU) with DCP checkpoints.")
def checkpoint(context: AssetExecutionContext, lab: LabResource) -> MaterializeResult:
    return lab.materialize(context, "checkpoint", build)
