"""The eval stage's content: per-domain validation loss and bits-per-byte at every checkpoint of a run (eval.json).

The curve starts where training started: the untrained model (the training seed's initialization) at step 0, or,
for continual pretraining, the parent's checkpoint (at step 0, or at the branch step for a WSD branch), so that
the early rise and recovery (the stability gap) and the forgetting on the parent's domains are visible.
"""

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from evaluation.perplexity import DomainResult, EvalConfig, ValSplit, evaluate_checkpoint, list_checkpoints
from training.config import ModelConfig

EVAL_FILE = "eval.json"


def validation_splits(mixed_dir: Path) -> dict[str, ValSplit]:
    """The held-out shard of every domain of a ``mixed`` output that has one, with its per-document index."""
    domains = json.loads((mixed_dir / "mixture.json").read_text())["domains"]
    return {
        name: ValSplit(str(mixed_dir / "shards" / name / "val.bin"), str(mixed_dir / "shards" / name / "val.index.npz"))
        for name, split in domains.items() if "val" in split
    }


def curve_checkpoints(run_dir: Path, parent_dir: Path | None = None, parent_step: int | None = None,
                      parent_mode: str = "") -> dict[int, Path | None]:
    """The checkpoints of the curve by step: where training started (None: the untrained model), then the run's.

    A branch keeps the parent's step count; continual pretraining restarts at 0.
    """
    if parent_dir is None or parent_step is None:
        return {0: None, **list_checkpoints(run_dir)}
    start = parent_step if parent_mode == "branch" else 0
    return {start: list_checkpoints(parent_dir)[parent_step], **list_checkpoints(run_dir)}


def evaluate_run(checkpoints: dict[int, Path | None], model: ModelConfig, vocab_size: int,
                 splits: dict[str, ValSplit], cfg: EvalConfig, seed: int, out_dir: Path,
                 on_step: Callable[[int, dict[str, DomainResult]], None] | None = None) -> dict[str, dict]:
    """Evaluate every checkpoint; write and return ``out_dir/eval.json``'s document: ``final`` (per domain, with
    the loss where the curve started as ``initial_loss``) and ``by_step`` (the curve: step -> domain -> results).
    """
    curve = {}
    for step, checkpoint in checkpoints.items():
        results = evaluate_checkpoint(checkpoint, model, vocab_size, splits, cfg, seed)
        curve[step] = {name: dataclasses.asdict(r) for name, r in results.items()}
        if on_step is not None:
            on_step(step, results)
    final, initial = curve[max(curve)], curve[min(curve)]
    stats = {name: {**final[name], "initial_loss": initial[name]["loss"]} for name in final}
    document = {"final": stats, "by_step": curve}
    (out_dir / EVAL_FILE).write_text(json.dumps(document, indent=2))
    return document
