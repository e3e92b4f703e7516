"""The files a training run writes beside its checkpoints, and what decides their bytes.

    checkpoint/step-N/         DCP checkpoints (torchtitan's), their .metadata without DCP's save id and path
    train_steps.jsonl          one row per logged step: step, loss, lr, grad_norm
    train_summary.json         first and final loss, steps, tokens seen, the loss curve of the last process
    checkpoint_ledger.json     the tokens each checkpoint has trained on, per phase and domain
    report/timings.jsonl       per logged step: tokens/s, MFU, peak memory (wall-clock figures)
    report/train_timings.json  the last process's mean tokens/s, MFU and wall seconds

Everything outside ``report/`` is content: the same job on the same inputs writes the same bytes, so a rebuilt
output keeps its content hash. Wall-clock figures go to ``report/`` (not hashed), MLflow and the manifest.
"""

import json
import pickle
from pathlib import Path
from typing import Any

from curation.packing import consumed_ledger

STEPS_FILE = "train_steps.jsonl"
SUMMARY_FILE = "train_summary.json"
LEDGER_FILE = "checkpoint_ledger.json"
REPORT_DIR = "report"  # an output's unhashed folder (orchestration.store.content_hash)
TIMINGS_FILE = f"{REPORT_DIR}/timings.jsonl"
TIMING_SUMMARY_FILE = f"{REPORT_DIR}/train_timings.json"


def step_row(metrics: dict[str, Any]) -> dict[str, float]:
    """The content of one logged step, from torchtitan's metrics: what the model did, not how fast."""
    return {
        "loss": float(metrics["loss_metrics/global_avg_loss"]),
        "lr": next(float(v) for k, v in metrics.items() if k.startswith("lr/")),
        "grad_norm": float(metrics["grad_norm"]),
    }


class RowLog:
    """An append-only JSON-lines file of per-step rows, flushed after each row so the rows survive a killed run.

    A resumed run logs the steps after its checkpoint again: the last row of a step is the one that counts.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a")

    def append(self, step: int, row: dict[str, float]) -> None:
        self.file.write(json.dumps({"step": step, **row}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_rows(path: Path) -> dict[int, dict[str, Any]]:
    """Every row of a RowLog file by step, in step order; after a resume the rerun of a step wins."""
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {row["step"]: row for row in sorted(rows, key=lambda row: row["step"])}


def step_log(output_dir: str | Path) -> dict[int, dict[str, Any]]:
    """Every logged step's row of <output_dir>/train_steps.jsonl: loss, lr, grad_norm."""
    return read_rows(Path(output_dir, STEPS_FILE))


def timing_log(output_dir: str | Path) -> dict[int, dict[str, Any]]:
    """Every logged step's timings from <output_dir>/report/timings.jsonl: tokens_per_second, mfu, peak memory."""
    return read_rows(Path(output_dir, TIMINGS_FILE))


def run_summary(loss_curve: list[list[float]], steps: int, tokens_seen: int) -> dict[str, Any]:
    """The summary of the steps one process ran (after a resume: from the checkpoint on); steps and tokens are
    totals."""
    return {
        "first_loss": loss_curve[0][1] if loss_curve else None,
        "final_loss": loss_curve[-1][1] if loss_curve else None,
        "steps": steps,
        "tokens_seen": tokens_seen,
        "loss_curve": loss_curve,
    }


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def write_checkpoint_ledger(output_dir: Path, stream: Path, seq_len: int, global_batch_size: int,
                            steps: list[int]) -> None:
    """The tokens each checkpoint has trained on, per phase and domain, from the loader's deterministic order."""
    ledgers = {step: consumed_ledger(stream, seq_len, global_batch_size, step) for step in steps}
    write_json(output_dir / LEDGER_FILE, ledgers)


def drop_checkpoint_save_ids(output_dir: str | Path) -> None:
    """Take DCP's save record (the folder's absolute path and a random save id) out of each checkpoint's .metadata.

    DCP writes it into the metadata pickle, so two saves of the same state differ; loading does not use it (a
    reader fills in an empty one). The rewrite goes through a temporary file and a rename, as DCP's own write does.
    """
    for path in sorted(Path(output_dir, "checkpoint").glob("step-*/.metadata")):
        metadata = pickle.loads(path.read_bytes())  # our own trainer's file
        if metadata.storage_meta is None:
            continue
        metadata.storage_meta = None
        temporary = path.with_name(".metadata.tmp")
        temporary.write_bytes(pickle.dumps(metadata))
        temporary.replace(path)
