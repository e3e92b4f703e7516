"""Per-checkpoint evaluation results, cached by checkpoint and eval config, shared by every run of a lab home.

A checkpoint is evaluated while its training still runs (the live-evaluation sensor, one Dagster run per saved
checkpoint) and again by the arm's ``eval`` asset once training has ended; a child's curve starts at its parent's
checkpoint, which the parent's ``eval`` already evaluated. All of them go through this cache, so each
(checkpoint, domain) is computed once: a killed eval continues where it stopped, and adding a domain computes
only the new one.

A checkpoint is named by the training output's fingerprint and its step (``<fingerprint>/step-N``): the
fingerprint already names everything that decides a checkpoint's bytes (config, upstream data, code), as it does
for the store, and costs nothing to compute, where hashing the files would read every checkpoint in full. The
untrained starting point is named by the model config, vocabulary and seed. An entry's key adds the item (a
domain, or a downstream task), its inputs (the held-out split's digest and the validation config; the task's files
and the downstream config) and the code that computes the numbers.

Layout: ``<store>/evalcache/<key[:2]>/<key>.json``, each written by an atomic rename; ``.lease-<checkpoint>``
files let one process at a time evaluate a checkpoint (see orchestration.leases), so that two runs that want the
same checkpoint compute it once: the second waits, then finds the results.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from evaluation.validation import Checkpoint
from orchestration.code_identity import combined_version, module_digests
from orchestration.leases import Holder, LeaseTiming, hold_lease
from orchestration.store import stable_json

CACHE_DIR = "evalcache"
# The modules whose code decides the numbers of one checkpoint on one item (not the plots or tables around them).
NUMBER_MODULES = ("evaluation.perplexity", "evaluation.bootstrap", "evaluation.downstream", "training.model",
                  "training.export", "kernels")


def checkpoint_key(step_dir: Path | None, untrained: dict) -> str:
    """``<fingerprint>/step-N`` for a step folder of a training output (committed or still partial); for the
    untrained model (None), ``init-<digest>`` of what decides its weights (model config, vocabulary, seed)."""
    if step_dir is None:
        return "init-" + hashlib.sha256(stable_json(untrained).encode()).hexdigest()[:16]
    output = step_dir.parent.parent.name.removeprefix(".partial-")
    return f"{output}/{step_dir.name}"


class EvalCache:
    """Results of (checkpoint, item) evaluations under ``<store>/evalcache``; see the module docstring."""

    def __init__(self, store_root: Path, holder: str, on_wait: Callable[[str], None] | None = None):
        self.root = store_root / CACHE_DIR
        self.holder, self.on_wait = holder, on_wait  # who evaluates (a Dagster run, for people), and their log
        # What every entry depends on besides its checkpoint, item and inputs: the code that computes numbers.
        self.code = combined_version(module_digests(NUMBER_MODULES))

    def key(self, checkpoint: str, item: str, inputs: dict) -> str:
        payload = stable_json({"checkpoint": checkpoint, "item": item, "inputs": inputs, "code": self.code})
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        return json.loads(path.read_text())["result"] if path.is_file() else None

    def put(self, key: str, result: dict, about: dict) -> None:
        """Store ``result`` (``about`` says what it is, for people reading the folder), by an atomic rename."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        scratch.write_text(json.dumps({"about": about, "result": result}, sort_keys=True))
        os.replace(scratch, path)

    def hold(self, checkpoint: str) -> AbstractContextManager[Holder]:
        """The right to evaluate ``checkpoint`` (a lease; waits while another process holds it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        lease = self.root / f".lease-{checkpoint.replace('/', '@')}"
        return hold_lease(lease, self.holder, f"evaluation of {checkpoint}", self.on_wait, LeaseTiming())


def named_checkpoints(curve: dict[int, Path | None], untrained: dict) -> dict[int, Checkpoint]:
    """A curve's checkpoints by step (evaluation.validation.curve_checkpoints), each with its cache name."""
    return {step: Checkpoint(path, checkpoint_key(path, untrained)) for step, path in curve.items()}
