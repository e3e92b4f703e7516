"""Where the per-step training metrics go: the step log, MLflow, Dagster Pipes and the run's timings.

torchtitan's MetricsProcessor computes the metrics (global loss, grad norm, throughput, FLOPs, memory, lr) and hands
them to a logger; `LabMetricsProcessor` swaps that logger for a `RunRecorder` on rank 0. The recorder writes each
step's content (training.outputs decides its bytes) and, apart from it, the step's timings to ``report/``. MFU is
torchtitan's: its
FLOPs per token of the model config times tokens/s per device, over the device's bf16 peak (torchtitan's table on
GPU; on CPU only where a peak is configured, since no table entry means anything there). Pipes is reached
through the standalone dagster_pipes package only: this process never imports dagster.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from dagster_pipes import PipesContext, PipesEnvVarParamsLoader, open_dagster_pipes
from torchtitan.components.metrics import BaseLogger, MetricsProcessor
from torchtitan.distributed import ParallelDims
from torchtitan.tools.utils import get_peak_flops

from training.outputs import STEPS_FILE, TIMINGS_FILE, RowLog, step_row


@contextmanager
def pipes_session(rank: int) -> Iterator[None]:
    """Open the Dagster Pipes connection on rank 0 when a Pipes client launched us; else do nothing."""
    if rank == 0 and PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes():
            yield
    else:
        yield


class RunRecorder(BaseLogger):
    """Rank 0's sink for torchtitan's logged steps."""

    def __init__(
        self,
        world_size: int,
        mlflow_tracking_uri: str | None,
        mlflow_run_id: str | None,
        output_dir: Path,
        peak_flops: float | None = None,
    ):
        self.world_size = world_size
        self.peak_flops = peak_flops  # per device; None: no MFU
        self.flops_per_token: float | None = None
        self.steps = RowLog(output_dir / STEPS_FILE)
        self.timings = RowLog(output_dir / TIMINGS_FILE)
        self.mlflow = None
        self.mlflow_run_id = mlflow_run_id
        if mlflow_tracking_uri and mlflow_run_id:
            from mlflow.tracking import MlflowClient  # slow import, only where asked for

            self.mlflow = MlflowClient(mlflow_tracking_uri)
        self.pending: list[Any] = []  # MLflow's asynchronous log operations, awaited in close()
        self.pipes = PipesContext.get() if PipesContext.is_initialized() else None
        self.loss_curve: list[list[float]] = []
        self.logged: list[tuple[float, int]] = []  # (wall clock, global tokens seen) at each logged step

    def timing_row(self, metrics: dict[str, Any]) -> dict[str, float]:
        """The wall-clock figures of one logged step, from torchtitan's metrics."""
        tokens_per_device = float(metrics["throughput(tps)"])  # torchtitan's: over the interval since the last log
        row = {"tokens_per_second": tokens_per_device * self.world_size}
        if self.peak_flops and tokens_per_device > 0:
            self.flops_per_token = float(metrics["tflops"]) * 1e12 / tokens_per_device
            row["mfu"] = 100 * self.flops_per_token * tokens_per_device / self.peak_flops  # percent
        peak_gib = float(metrics["memory/max_reserved(GiB)"])
        if peak_gib > 0:  # torchtitan reports a negative number where the device has no statistics
            row["peak_memory_gib"] = peak_gib
        return row

    def log(self, metrics: dict[str, Any], step: int) -> None:
        content, timings = step_row(metrics), self.timing_row(metrics)
        self.loss_curve.append([step, content["loss"]])
        self.steps.append(step, content)
        self.timings.append(step, timings)
        row = {**content, **timings}
        self.logged.append((time.perf_counter(), int(metrics["n_tokens_seen"])))
        if self.mlflow is not None:
            from mlflow.entities import Metric

            now_ms = int(time.time() * 1000)
            batch = [Metric(f"train/{key}", value, now_ms, step) for key, value in row.items()]
            # Asynchronous: the database write happens on MLflow's logging thread, not in the training step.
            self.pending.append(self.mlflow.log_batch(self.mlflow_run_id, metrics=batch, synchronous=False))
        if self.pipes is not None:
            self.pipes.log.info(f"step {step}: " + "  ".join(f"{k} {v:.6g}" for k, v in row.items()))

    def close(self) -> None:
        for operation in self.pending:
            operation.wait()
        self.steps.close()
        self.timings.close()

    def mean_tokens_per_second(self) -> float | None:
        """Global tokens/s from the first logged step to the last, so start-up time is left out."""
        if len(self.logged) < 2:
            return None
        (t0, n0), (t1, n1) = self.logged[0], self.logged[-1]
        return (n1 - n0) / (t1 - t0)

    def mean_mfu(self, tokens_per_second: float | None) -> float | None:
        """MFU (percent) at the run's mean global tokens/s."""
        if tokens_per_second is None or self.flops_per_token is None or not self.peak_flops:
            return None
        return 100 * self.flops_per_token * tokens_per_second / (self.world_size * self.peak_flops)

    def run_timings(self, wall_seconds: float) -> dict[str, float | None]:
        """The wall-clock figures of the steps this process ran."""
        tokens_per_second = self.mean_tokens_per_second()
        return {"tokens_per_second": tokens_per_second, "mfu": self.mean_mfu(tokens_per_second),
                "wall_seconds": wall_seconds}

    def report_summary(self, summary: dict[str, Any]) -> None:
        if self.pipes is not None:
            brief = {k: v for k, v in summary.items() if k != "loss_curve"}
            self.pipes.log.info(f"training finished: {brief}")


class LabMetricsProcessor(MetricsProcessor):
    """torchtitan's metrics processor with our RunRecorder as its logger."""

    @dataclass(kw_only=True, slots=True)
    class Config(MetricsProcessor.Config):
        mlflow_tracking_uri: str | None = None
        mlflow_run_id: str | None = None
        peak_tflops: float | None = None  # per-device peak for MFU; None: torchtitan's bf16 table on GPU, none on CPU

    def _build_metric_logger(
        self, *, config: Config, parallel_dims: ParallelDims, dump_folder: str, **_: Any
    ) -> BaseLogger:
        # Without pipeline parallelism the global loss is known on every rank; rank 0 reports it.
        if parallel_dims.pp_enabled:
            raise NotImplementedError("metrics reporting under pipeline parallelism")
        if torch.distributed.get_rank() != 0:
            return BaseLogger()
        return RunRecorder(parallel_dims.world_size, config.mlflow_tracking_uri, config.mlflow_run_id,
                           Path(dump_folder), peak_flops(config.peak_tflops))


def peak_flops(configured_tflops: float | None) -> float | None:
    """The per-device peak FLOP/s that MFU is measured against."""
    if configured_tflops:
        return configured_tflops * 1e12
    if torch.cuda.is_available():
        return get_peak_flops(torch.cuda.get_device_name())
    return None

