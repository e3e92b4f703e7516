"""The eval stage's content: per-domain validation loss and bits-per-byte at every checkpoint of a run (eval.json).

The curve starts where training started: the untrained model (the training seed's initialization) at step 0, or,
for continual pretraining, the parent's checkpoint (at step 0, or at the branch step for a WSD branch), so that
the early rise and recovery (the stability gap) and the forgetting on the parent's domains are visible.
"""

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

from evaluation.config import DownstreamConfig
from evaluation.downstream import evaluate_downstream
from evaluation.downstream_tasks import MANIFEST
from evaluation.perplexity import EvalConfig, ValSplit, evaluate_checkpoint, list_checkpoints
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
    own = dict(sorted(list_checkpoints(run_dir).items()))  # by step: step-100 comes after step-25
    if parent_dir is None or parent_step is None:
        return {0: None, **own}
    start = parent_step if parent_mode == "branch" else 0
    return {start: list_checkpoints(parent_dir)[parent_step], **own}


class ResultCache(Protocol):
    """Where per-checkpoint results are kept between runs (orchestration.eval_cache.EvalCache)."""

    def key(self, checkpoint: str, item: str, inputs: dict) -> str: ...
    def get(self, key: str) -> dict | None: ...
    def put(self, key: str, result: dict, about: dict) -> None: ...
    def hold(self, checkpoint: str) -> AbstractContextManager: ...


@dataclass
class Checkpoint:
    path: Path | None  # a step-N folder; None: the untrained model
    name: str  # what the cache knows it by (orchestration.eval_cache.checkpoint_key)


@dataclass
class Tasks:
    """Downstream tasks to run at every checkpoint: a folder of evaluation.downstream_tasks.build_tasks."""

    folder: Path
    tokenizer_dir: Path
    cfg: DownstreamConfig

    @cached_property
    def digests(self) -> dict[str, str]:
        """Each task's identity: its lm-eval config and examples (read once, not at every checkpoint)."""
        tasks = json.loads((self.folder / MANIFEST).read_text())["tasks"]
        return {t: files_digest([self.folder / f"{t}.yaml", self.folder / f"{t}.jsonl"]) for t in sorted(tasks)}


@dataclass
class StepEval:
    results: dict[str, dict]  # domain -> {"loss", "bits_per_byte", "tokens", ...}
    computed: list[str]  # what was computed now ("<domain>", "task:<task>"); the rest came from the cache
    tasks: dict[str, dict] = field(default_factory=dict)  # task -> {"acc", "acc_stderr", "n", "chance"}


def files_digest(paths: list[Path | str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def split_digest(split: ValSplit) -> str:
    """The held-out split's identity (its tokens and document index): a result is reused only on the same."""
    return files_digest([split.tokens_path, split.index_path])


def evaluate_step(checkpoint: Checkpoint, model: ModelConfig, vocab_size: int, splits: dict[str, ValSplit],
                  digests: dict[str, str], cfg: EvalConfig, seed: int, cache: ResultCache,
                  tasks: Tasks | None = None) -> StepEval:
    """One checkpoint on every domain (and task): cached results where there are, the missing ones computed and
    cached, so that a killed evaluation keeps every checkpoint it finished and a new domain or task costs only
    itself. Each entry's inputs are what decides its numbers: the split and the validation config for a domain,
    the task's files and the downstream config for a task."""
    validation = {k: v for k, v in asdict(cfg).items() if k != "downstream"}
    with cache.hold(checkpoint.name):
        keys = {d: cache.key(checkpoint.name, f"validation:{d}", {"split": digests[d], "eval": validation})
                for d in splits}
        results = {d: found for d in splits if (found := cache.get(keys[d])) is not None}
        missing = [d for d in splits if d not in results]
        if missing:
            computed = evaluate_checkpoint(checkpoint.path, model, vocab_size, {d: splits[d] for d in missing}, cfg,
                                           seed)
            for domain, result in computed.items():
                results[domain] = asdict(result)
                cache.put(keys[domain], results[domain], {"checkpoint": checkpoint.name, "domain": domain})
        scores, missing_tasks = {}, []
        if tasks is not None:
            task_keys = {t: cache.key(checkpoint.name, f"task:{t}", {"task": d, "downstream": asdict(tasks.cfg)})
                         for t, d in tasks.digests.items()}
            scores = {t: found for t, key in task_keys.items() if (found := cache.get(key)) is not None}
            missing_tasks = [t for t in task_keys if t not in scores]
            if missing_tasks:
                computed = evaluate_downstream(checkpoint.path, model, tasks.tokenizer_dir, tasks.folder, tasks.cfg,
                                               seed, only=missing_tasks)
                for task, score in computed.items():
                    scores[task] = score
                    cache.put(task_keys[task], score, {"checkpoint": checkpoint.name, "task": task})
    return StepEval({d: results[d] for d in splits}, missing + [f"task:{t}" for t in missing_tasks],
                    {t: scores[t] for t in sorted(scores)})


def evaluate_run(checkpoints: dict[int, Checkpoint], model: ModelConfig, vocab_size: int,
                 splits: dict[str, ValSplit], cfg: EvalConfig, seed: int, out_dir: Path, cache: ResultCache,
                 on_step: Callable[[int, StepEval], None] | None = None, tasks: Tasks | None = None
                 ) -> dict[str, dict]:
    """Evaluate every checkpoint (through the cache); write and return ``out_dir/eval.json``'s document: ``final``
    (per domain, with the loss where the curve started as ``initial_loss``), ``by_step`` (the curve: step ->
    domain -> results) and, with tasks, ``downstream`` (step -> task -> accuracy).
    """
    digests = {domain: split_digest(split) for domain, split in splits.items()}
    curve, downstream = {}, {}
    for step, checkpoint in checkpoints.items():
        evaluated = evaluate_step(checkpoint, model, vocab_size, splits, digests, cfg, seed, cache, tasks)
        curve[step] = evaluated.results
        if tasks is not None:
            downstream[step] = evaluated.tasks
        if on_step is not None:
            on_step(step, evaluated)
    final, initial = curve[max(curve)], curve[min(curve)]
    stats = {name: {**final[name], "initial_loss": initial[name]["loss"]} for name in final}
    document = {"final": stats, "by_step": curve, **({"downstream": downstream} if tasks is not None else {})}
    (out_dir / EVAL_FILE).write_text(json.dumps(document, indent=2))
    return document
