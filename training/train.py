"""Entry point of one training rank: `torchrun --nproc_per_node=N -m training.train --job JOB.json`.

Builds a torchtitan Trainer.Config from the job (our llama3 sizes, token-file loader, AdamW with a named LR schedule
(training.schedules), FSDP2 / tensor parallelism through torchtitan's parallelize_llama, DCP checkpoints under
<output_dir>/checkpoint/step-N) and runs torchtitan's Trainer. Rerunning a job on the same output folder resumes
from its last complete checkpoint; a job with an init section starts from a parent checkpoint.
"""

import argparse
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch.distributed.elastic.multiprocessing.errors import record
from torchtitan.components.loss import CrossEntropyLoss
from torchtitan.components.optimizer import default_adamw
from torchtitan.config import CompileConfig, DebugConfig, ParallelismConfig, TrainingConfig
from torchtitan.distributed import utils as dist_utils
from torchtitan.observability import structured_logger
from torchtitan.tools.logging import init_logger
from torchtitan.trainer import Trainer

from kernels.attention import attention_backend
from training import cpu_compat
from training.checkpoint import checkpoint_config
from training.data import TokenFileDataLoader
from training.job import TrainJob, check_init
from training.lr_schedulers import LabLRSchedulers
from training.model import llama3_spec
from training.outputs import SUMMARY_FILE, TIMING_SUMMARY_FILE, drop_checkpoint_save_ids, run_summary, write_json
from training.parent_death import rank_dies_with_launcher
from training.tracking import LabMetricsProcessor, RunRecorder, pipes_session


def vocab_size(tokenizer_dir: str) -> int:
    return Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json")).get_vocab_size()


def data_parallel_degree(job: TrainJob, world_size: int) -> int:
    """The FSDP degree of the job's layout on `world_size` ranks; a layout that cannot work is a clear error."""
    p, m = job.parallel, job.model
    if m.n_heads % p.tp or m.n_kv_heads % p.tp:
        raise ValueError(
            f"tensor parallelism splits attention heads: model.n_heads ({m.n_heads}) and model.n_kv_heads "
            f"({m.n_kv_heads}) must be divisible by parallel.tp ({p.tp})"
        )
    dp = p.dp_shard if p.dp_shard > 0 else world_size // p.tp
    if dp * p.tp != world_size:
        raise ValueError(
            f"{dp} data-parallel x {p.tp} tensor-parallel ranks (parallel.dp_shard={p.dp_shard}, parallel.tp={p.tp}) "
            f"do not fill the {world_size} ranks (nnodes * nproc_per_node): choose a tp that divides {world_size} "
            "and dp_shard = -1"
        )
    return dp


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
        checkpoint=checkpoint_config(job.init, t.checkpoint_interval, t.checkpoint_early),
        activation_checkpoint=None,  # small models; recomputation would only cost time
        compile=CompileConfig(enable=p.compile),
        debug=DebugConfig(seed=t.seed, enable_structured_logging=False),
    )


def _set_pg_timeouts(timeout: timedelta, parallel_dims: Any) -> None:
    """torchtitan's `set_pg_timeouts` for torch builds without `torch.distributed.set_timeout` (2.13, CPU and GPU).

    The same barrier first (so no rank starts on the short timeout while another is still starting up), then
    torch's own per-group setter.
    """
    if torch.cuda.is_available():
        torch.distributed.barrier(device_ids=[torch.cuda.current_device()])
    else:
        torch.distributed.barrier()
    groups = [mesh.get_group() for mesh in parallel_dims.get_all_one_dimensional_meshes().values()]
    for group in [*groups, None]:  # None: the default (world) group
        torch.distributed.distributed_c10d._set_pg_timeout(timeout, group)


def run(job: TrainJob, started: float, seed_checkpoint: bool) -> None:
    world_size = int(os.environ["WORLD_SIZE"])
    if job.init is not None:
        check_init(job.init)
    config = trainer_config(job, world_size)
    if seed_checkpoint and world_size != 1:
        raise ValueError("a seed checkpoint is written by one rank: launch it with nproc_per_node=1")
    config.checkpoint.create_seed_checkpoint = seed_checkpoint  # initialise unsharded, on the CPU
    if not hasattr(torch.distributed, "set_timeout"):
        dist_utils.set_pg_timeouts = _set_pg_timeouts
    if cpu_compat.needed():
        cpu_compat.apply(config)
    if job.parallel.backend != "auto":
        # torchtitan picks gloo/nccl from the device type and leaves an existing process group alone.
        torch.distributed.init_process_group(backend=job.parallel.backend)
    trainer = config.build()
    try:
        if seed_checkpoint:
            trainer.checkpointer.save(curr_step=0, last_step=True)
        else:
            trainer.train()
    finally:
        trainer.close()
    if torch.distributed.get_rank() == 0:  # every save is complete once the trainer is closed
        drop_checkpoint_save_ids(job.output_dir)
    recorder = trainer.metrics_processor.logger
    # Rank 0 writes the summary of the steps it ran; a rerun of a finished job runs none and keeps the old one.
    # Its timings go apart, to report/, so that the summary's bytes are those of any rerun of the job.
    if isinstance(recorder, RunRecorder) and recorder.loss_curve:
        tokens_seen = trainer.step * job.train.global_batch_size * job.train.seq_len
        summary = run_summary(recorder.loss_curve, trainer.step, tokens_seen)
        timings = recorder.run_timings(time.perf_counter() - started)
        write_json(Path(job.output_dir, SUMMARY_FILE), summary)
        write_json(Path(job.output_dir, TIMING_SUMMARY_FILE), timings)
        recorder.report_summary({**summary, **timings})
    torch.distributed.destroy_process_group()


@record  # a failing rank's traceback reaches torchrun's error report
def main() -> None:
    rank_dies_with_launcher()  # no orphaned rank training on after its torchrun (or the whole run) was killed
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", required=True, help="TrainJob JSON file")
    parser.add_argument(
        "--seed-checkpoint",
        action="store_true",
        help="write the initial weights to <output_dir>/checkpoint/step-0 and stop; runs that start from it "
        "(init mode weights) begin identically whatever their parallel layout",
    )
    args = parser.parse_args()
    job = TrainJob.load(args.job)
    init_logger()
    structured_logger.init_structured_logger(source="training", output_dir=job.output_dir, enable=False)
    with pipes_session(int(os.environ.get("RANK", "0"))):
        run(job, started, args.seed_checkpoint)


if __name__ == "__main__":
    main()
