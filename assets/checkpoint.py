"""``checkpoint``: a TorchTitan training run on the mixed stream, launched with torchrun through Dagster Pipes:
on this node, or as a Slurm job (``launcher=slurm``, orchestration.slurm_client).

With a parent (``parent.*``) the run starts from the parent's checkpoint: weights only, weights and optimizer, or
the whole state (a branch). A run killed part-way (a rank SIGKILLed, the node rebooted) keeps its partial output;
the retry, or the next materialization, resumes from its last complete checkpoint with the loader state restored.
"""

import json
import tempfile
from pathlib import Path

from dagster import DagsterExecutionInterruptedError, Failure, PipesSubprocessClient

from evaluation.perplexity import list_checkpoints
from evaluation.plots import plot_curves, plot_lr_schedule
from evaluation.validation import curve_checkpoints
from orchestration.checkpoint_mirror import mirror_checkpoints
from orchestration.cluster_launch import job_name
from orchestration.config import REPO_ROOT, ExperimentConfig
from orchestration.live_eval import report_checkpoints
from orchestration.resources import StageResult, StageRun, inline_plots
from orchestration.slurm_client import run_on_slurm
from orchestration.store import REPORT_DIR
from training.config import InitConfig
from training.job import TrainJob, launch_command
from training.outputs import LEDGER_FILE, SUMMARY_FILE, TIMING_SUMMARY_FILE, step_log, write_checkpoint_ledger


def checkpoint_metadata(run: StageRun) -> dict:
    """What the live evaluation of a reported checkpoint needs to know: whose training it is, and where."""
    experiment, arm, overrides = run.arm
    return {"fingerprint": run.fingerprint, "mlflow_run_id": run.mlflow_run_id, "experiment": experiment,
            "arm": arm, "overrides": json.dumps(overrides)}


def train_job(cfg: ExperimentConfig, upstream: dict[str, Path], output: Path, parent_step: int | None,
              mlflow_tracking_uri: str | None = None, mlflow_run_id: str | None = None) -> TrainJob:
    """The training job of the checkpoint: run here with torchrun, or rendered for a cluster (cluster_launch)."""
    init = None
    parent_dir = upstream.get("parent")
    if parent_dir is not None:
        parent_checkpoint = list_checkpoints(parent_dir)[parent_step]
        init = InitConfig(checkpoint=str(parent_checkpoint.resolve()), mode=cfg.parent.mode)
    return TrainJob(
        model=cfg.model, train=cfg.train, parallel=cfg.parallel,
        tokenizer_dir=str(upstream["tokenizer"]), train_tokens=str(upstream["mixed"] / "train_stream.bin"),
        output_dir=str(output), mlflow_tracking_uri=mlflow_tracking_uri, mlflow_run_id=mlflow_run_id, init=init,
    )


def launch(run: StageRun, job: TrainJob) -> dict:
    """Run the training job where ``launcher`` says: torchrun here, or a Slurm job. Metadata naming the job."""
    launcher = run.cfg.launcher
    if launcher.kind == "kubernetes":
        raise ValueError("launcher=kubernetes: submitting the Job is not built; `lab launch-spec ... "
                         "launcher=kubernetes` prints it for kubectl, or train with launcher=local or launcher=slurm")
    try:
        if launcher.kind == "slurm":
            return {"slurm_job": run_on_slurm(run.context, launcher, job, job_name(run.cfg.name, run.fingerprint))}
        # The job file names machine paths, so it lives outside the versioned output.
        with tempfile.TemporaryDirectory() as scratch:
            job_path = Path(scratch) / "job.json"
            job.save(job_path)
            PipesSubprocessClient().run(context=run.context, command=launch_command(job_path), cwd=str(REPO_ROOT))
        return {}
    except DagsterExecutionInterruptedError as interrupt:
        # Under a retry policy Dagster retries an interrupted step (made for a preempted pod). Here an interrupt is
        # the run being stopped (terminated, SIGTERM, Ctrl-C) and its training was just stopped: do not restart it.
        raise Failure("interrupted: the run was stopped, and its training with it; not retried",
                      allow_retries=False) from interrupt


def build(run: StageRun) -> StageResult:
    cfg = run.cfg
    parent_dir = run.upstream.get("parent")
    job = train_job(cfg, run.upstream, run.output, run.parent_step, run.mlflow_tracking_uri, run.mlflow_run_id)
    stream = Path(job.train_tokens)
    # Each checkpoint is reported as it lands, for the live-evaluation sensor (orchestration.live_eval), and
    # with an object store copied there, so that another host can resume (orchestration.checkpoint_mirror).
    with report_checkpoints(
        run.context, lambda: curve_checkpoints(run.output, parent_dir, run.parent_step, cfg.parent.mode),
        checkpoint_metadata(run),
    ), mirror_checkpoints(run.store.remote if run.store else None, run.output, "checkpoint", run.fingerprint):
        launched = launch(run, job)
    checkpoint_steps = sorted(list_checkpoints(run.output))  # what children may start or branch from
    write_checkpoint_ledger(run.output, stream, cfg.train.seq_len, cfg.train.global_batch_size, checkpoint_steps)

    summary = json.loads((run.output / SUMMARY_FILE).read_text())
    timings = json.loads((run.output / TIMING_SUMMARY_FILE).read_text())
    # The whole curve, also across a resume (the summary only knows the steps of the last process).
    curve = [(step, row["loss"]) for step, row in step_log(run.output).items()]
    summary.update(first_loss=curve[0][1], final_loss=curve[-1][1])
    plots = [f"{REPORT_DIR}/loss_curve.png", f"{REPORT_DIR}/lr_schedule.png"]
    (run.output / REPORT_DIR).mkdir(exist_ok=True)
    plot_curves({"train": curve}, run.output / plots[0], title=f"{cfg.name}: training loss",
                ylabel="loss (nats/token)")
    plot_lr_schedule(cfg.train, run.output / plots[1])
    stats = {**{k: v for k, v in summary.items() if k != "loss_curve"}, **timings}
    stats["vocab_size"] = run.upstream_manifests["tokenizer"].stats["vocab_size"]
    stats["checkpoint_steps"] = checkpoint_steps
    return StageResult(
        stats,
        {"first_loss": summary["first_loss"], "final_loss": summary["final_loss"],
         "tokens_per_second": timings["tokens_per_second"], "plots": inline_plots([run.output / p for p in plots]),
         **launched},
        artifacts=[*plots, SUMMARY_FILE, TIMING_SUMMARY_FILE, LEDGER_FILE],
    )
