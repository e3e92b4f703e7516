"""Entry point of one training rank: `torchrun --nproc_per_node=N -m training.train --job JOB.json`.

Builds a torchtitan Trainer.Config from the job (our llama3 sizes, token-file loader, AdamW with a named LR schedule
(training.schedules), DCP checkpoints under <output_dir>/checkpoint/step-N) and runs torchtitan's
Trainer. Rerunning a job on the same output folder resumes from its last checkpoint.
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch.distributed.elastic.multiprocessing.errors import record
from torchtitan.components.checkpoint import CheckpointManager
from torchtitan.components.loss import CrossEntropyLoss
from torchtitan.components.optimizer import default_adamw
from torchtitan.config import CompileConfig, DebugConfig, ParallelismConfig, TrainingConfig
from torchtitan.observability import structured_logger
from torchtitan.tools.logging import init_logger
from torchtitan.trainer import Trainer

from kernels.attention import attention_backend
from training import cpu_compat
from training.data import TokenFileDataLoader
from training.job import TrainJob
from training.lr_schedulers import LabLRSchedulers
from training.model import llama3_spec
from training.tracking import LabMetricsProcessor, RunRecorder, pipes_session


def vocab_size(tokenizer_dir: str) -> int:
    return Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json")).get_vocab_size()


def data_parallel_degree(job: TrainJob, world_size: int) -> int:
    if job.parallel.dp_shard > 0:
        return job.parallel.dp_shard
    return world_size // job.parallel.tp


def trainer_config(job: TrainJob, world_size: int) -> Trainer.Config:
    t, p = job.train, job.parallel
    dp = data_parallel_degree(job, world_size)
    if t.global_batch_size % dp:
        raise ValueError(f"global_batch_size {t.global_batch_size} is not divisible by {dp} data-parallel ranks")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = llama3_spec(job.model, vocab_size(job.tokenizer_dir), attention_backend(device))
    return Trainer.Config(
        model_spec=spec,
        hf_assets_path=job.tokenizer_dir,
        dump_folder=job.output_dir,
        loss=CrossEntropyLoss.Config(global_vocab_size=spec.model.vocab_size),
        optimizer=default_adamw(lr=t.lr, weight_decay=t.weight_decay),
        lr_scheduler=LabLRSchedulers.config_from(t),
        training=TrainingConfig(
            local_batch_size=t.global_batch_size // dp,
            global_batch_size=t.global_batch_size,
            seq_len=t.seq_len,
            steps=t.steps,
            max_norm=t.grad_clip,
            # Parameters and optimizer state stay float32; `dtype` is the FSDP compute dtype.
            dtype="float32",
            mixed_precision_param=t.dtype,
        ),
        dataloader=TokenFileDataLoader.Config(dataset_path=job.train_tokens),
        metrics=LabMetricsProcessor.Config(
            log_freq=t.log_every,
            mlflow_tracking_uri=job.mlflow_tracking_uri,
            mlflow_run_id=job.mlflow_run_id,
            peak_tflops=t.peak_tflops,
        ),
        parallelism=ParallelismConfig(data_parallel_shard_degree=p.dp_shard, tensor_parallel_degree=p.tp),
        checkpoint=CheckpointManager.Config(
            enable=True,
            interval=t.checkpoint_interval,
            last_save_model_only=False,  # the last checkpoint must resume too, e.g. to train further
            keep_latest_k=0,  # intermediate checkpoints are research data (evals, WSD branches)
        ),
        activation_checkpoint=None,  # small models; recomputation would only cost time
        compile=CompileConfig(enable=p.compile),
        debug=DebugConfig(seed=t.seed, enable_structured_logging=False),
    )


def run(job: TrainJob, started: float) -> None:
    world_size = int(os.environ["WORLD_SIZE"])
    config = trainer_config(job, world_size)
    if cpu_compat.needed():
        cpu_compat.apply(config)
    if job.parallel.backend != "auto":
        # torchtitan picks gloo/nccl from the device type and leaves an existing process group alone.
        torch.distributed.init_process_group(backend=job.parallel.backend)
    trainer = config.build()
    try:
        trainer.train()
    finally:
        trainer.close()
    recorder = trainer.metrics_processor.logger
    # Rank 0 writes the summary of the steps it ran; a rerun of a finished job runs none and keeps the old one.
    if isinstance(recorder, RunRecorder) and recorder.loss_curve:
        tokens_seen = trainer.step * job.train.global_batch_size * job.train.seq_len
        summary = recorder.summary(trainer.step, tokens_seen, time.perf_counter() - started)
        Path(job.output_dir, "train_summary.json").write_text(json.dumps(summary, indent=2))
        recorder.report_summary(summary)
    torch.distributed.destroy_process_group()


@record  # a failing rank's traceback reaches torchrun's error report
def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", required=True, help="TrainJob JSON file")
    job = TrainJob.load(parser.parse_args().job)
    init_logger()
    structured_logger.init_structured_logger(source="training", output_dir=job.output_dir, enable=False)
    with pipes_session(int(os.environ.get("RANK", "0"))):
        run(job, started)


if __name__ == "__main__":
    main()
