"""Fingerprinted, atomically committed stage outputs: ``<store>/<stage>/<fingerprint>/`` with a manifest.

The fingerprint hashes exactly what changes the bytes of an output: the stage's resolved config slice, the content
hashes of its upstream outputs, and the stage's code version. Nothing else (paths, worker counts, storage) enters
it, so a cache hit is always safe and an irrelevant change never cascades.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestration.checkpoint_mirror import partial_name, restore_complete_steps
from orchestration.leases import Holder, LeaseTiming, hold_lease
from orchestration.object_store import MANIFEST, ObjectStore

REPORT_DIR = "report"  # derived, human-facing files of an output: plots, tables, timings (not content)


def stable_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(stage: str, code_version: str, config_slice: dict, upstream: dict[str, str]) -> str:
    payload = stable_json({"stage": stage, "code": code_version, "config": config_slice, "upstream": upstream})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts/lists to dotted keys: {"a": {"b": 1}} -> {"a.b": 1}; lists of scalars stay whole."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and not all(isinstance(v, (int, float, str, bool)) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    flat: dict[str, object] = {}
    for key, child in items:
        flat.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def content_hash(folder: Path) -> str:
    """Hash of every content file's relative path and bytes.

    Not content, so not hashed: ``manifest.json`` (statistics, build time, run ids) and everything under
    ``report/`` (plots, human tables, timings). Those may differ between two builds with the same inputs; the
    rest must not, so that a rebuild gives the same hash. DVC still versions them with the output. Downstream
    stages read content only, never ``report/``: what they read must be part of the hash.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and _is_content(p.relative_to(folder))):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _is_content(relative: Path) -> bool:
    return relative.name != MANIFEST and relative.parts[0] != REPORT_DIR


@dataclass
class Manifest:
    stage: str
    fingerprint: str
    content_hash: str
    code_version: str
    config: dict
    upstream: dict[str, str]
    stats: dict
    created_at: float = field(default_factory=time.time)
    build_seconds: float = 0.0
    mlflow_run_id: str = ""
    dagster_run_id: str = ""
    # The digest of each code module behind code_version, so a plan can say which module changed.
    code_modules: dict[str, str] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps(asdict(self), indent=2, sort_keys=True, default=str))

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        return cls.parse((folder / MANIFEST).read_text())

    @classmethod
    def parse(cls, text: str) -> Manifest:
        return cls(**json.loads(text))


class Store:
    """Outputs under ``root`` (a folder of the lab home); or, with ``remote``, in an object store, and ``root`` is
    the bounded local cache that builds and reads happen in (see orchestration.object_store)."""

    def __init__(self, root: Path, remote: ObjectStore | None = None):
        self.root = root
        self.remote = remote
        self._listed: dict[str, list[Manifest]] = {}  # manifests per stage, read once (plans of many arms ask often)

    def path(self, stage: str, fp: str) -> Path:
        """The output's local folder; with an object store, a cached copy, downloaded when first asked for."""
        if self.remote is not None:
            return self.remote.local(stage, fp)
        return self.root / stage / fp

    def find(self, stage: str, fp: str) -> Manifest | None:
        if self.remote is not None:
            text = self.remote.read_text(stage, fp, MANIFEST)
            return Manifest.parse(text) if text is not None else None
        folder = self.path(stage, fp)
        return Manifest.load(folder) if (folder / MANIFEST).is_file() else None

    def list(self, stage: str) -> list[Manifest]:
        """Every committed output of the stage, as this process first saw them plus what it committed since."""
        if stage not in self._listed:
            if self.remote is not None:
                self._listed[stage] = [Manifest.parse(text) for text in self.remote.manifests(stage)]
            else:
                folder = self.root / stage
                self._listed[stage] = [Manifest.load(p.parent) for p in sorted(folder.glob(f"*/{MANIFEST}"))]
        return self._listed[stage]

    def partial_path(self, stage: str, fp: str) -> Path:
        # Deterministic, so a stage that can resume (training) finds its own interrupted work again.
        return self.root / stage / partial_name(fp)

    def lease(
        self, stage: str, fp: str, holder: str, on_wait: Callable[[str], None] | None = None,
        timing: LeaseTiming | None = None,
    ) -> AbstractContextManager[Holder]:
        """The right to build ``stage``/``fp``, held for a ``with`` block; see orchestration.leases.

        Runs that share the store take it around ``find`` and ``commit``, so an output is built once and the others
        wait, then reuse it; when its holder dies, one waiter takes over (and resumes a resumable partial).
        """
        path = self.root / stage / f".lease-{fp}"
        return hold_lease(path, holder, f"{stage} {fp}", on_wait, timing or LeaseTiming())

    def commit(
        self, stage: str, fp: str, build: Callable[[Path], Manifest], keep_partial: bool = False
    ) -> Manifest:
        """Build into a partial folder, then rename it into place: readers never see half an output. With an object
        store, the output is uploaded before the rename, its manifest last (the commit marker there).

        Callers hold ``lease(stage, fp, ...)`` so that no other process builds into the same partial folder.
        """
        partial = self.partial_path(stage, fp)
        if partial.exists() and not keep_partial:
            shutil.rmtree(partial)
        if keep_partial and self.remote is not None and not partial.exists():
            restore_complete_steps(self.remote, partial, stage, fp)  # interrupted on another host, or evicted
        partial.mkdir(parents=True, exist_ok=True)
        started = time.time()
        manifest = build(partial)
        manifest.build_seconds = round(time.time() - started, 1)
        manifest.content_hash = content_hash(partial)
        manifest.save(partial)
        if self.remote is not None and self.find(stage, fp) is None:
            self.remote.upload(partial, stage, fp)
        final = self.root / stage / fp
        if final.exists():  # another run committed the same fingerprint meanwhile: same bytes by construction
            shutil.rmtree(partial)
        else:
            partial.rename(final)
        if self.remote is not None:
            self.remote.committed_locally(final)
            if keep_partial:
                self.remote.remove(stage, partial_name(fp))  # the mirrored partial (orchestration.checkpoint_mirror)
        self._listed.pop(stage, None)
        return Manifest.load(final)
