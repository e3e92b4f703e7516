"""MFU as torchtitan counts it: FLOPs per token times tokens/s per device, over the per-device peak."""

from pathlib import Path

from training.tracking import RunRecorder, peak_flops

# What torchtitan's MetricsProcessor hands its logger for one step: 1000 tokens/s per device at 6e9 FLOPs/token.
METRICS = {
    "loss_metrics/global_avg_loss": 2.5,
    "lr/AdamW": 1e-3,
    "throughput(tps)": 1000.0,
    "tflops": 6e9 * 1000 / 1e12,
    "grad_norm": 0.7,
    "memory/max_reserved(GiB)": -1.0,
}


def test_mfu_per_step_and_in_the_summary(tmp_path: Path) -> None:
    recorder = RunRecorder(world_size=4, mlflow_tracking_uri=None, mlflow_run_id=None, output_dir=tmp_path,
                           peak_flops=100e12)
    row = recorder.timing_row(METRICS)
    assert row["mfu"] == 100 * 6e9 * 1000 / 100e12  # 6 %
    assert row["tokens_per_second"] == 4000.0 and "peak_memory_gib" not in row
    # The summary's MFU is taken at the run's mean global tokens/s over all four devices.
    assert recorder.mean_mfu(tokens_per_second=8000.0) == 2 * row["mfu"]


def test_no_mfu_without_a_peak(tmp_path: Path) -> None:
    recorder = RunRecorder(world_size=2, mlflow_tracking_uri=None, mlflow_run_id=None, output_dir=tmp_path,
                           peak_flops=None)
    assert "mfu" not in recorder.timing_row(METRICS)
    assert recorder.mean_mfu(tokens_per_second=8000.0) is None
    assert peak_flops(312.0) == 312e12  # a configured peak wins on any device
