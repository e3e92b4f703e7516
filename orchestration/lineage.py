"""The lineage as data: which stage depends on which, on what config and on what code.

This is the single place that decides identity. The Dagster assets, ``lab plan`` and ``lab materialize`` all
ask it, so the UI's staleness, the plan and the cache can never disagree.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from curation.corpus import source_signature
from orchestration.config import ExperimentConfig
from orchestration.store import Manifest, Store, fingerprint, flatten


@dataclass(frozen=True)
class StageSpec:
    name: str
    upstream: tuple[str, ...]
    # Modules (or whole packages) whose source decides the stage's bytes: editing one re-runs the stage.
    code_modules: tuple[str, ...]
    # The part of the experiment config that decides the stage's bytes (never paths, workers or storage).
    config_slice: Callable[[ExperimentConfig], dict]
    description: str
    # A resumable stage (training) keeps its interrupted partial output and continues from it.
    resumable: bool = False


def _filter_slice(cfg: ExperimentConfig) -> dict:
    rules = asdict(cfg.filter)
    rules.pop("workers")  # speed only
    rules.pop("executor")  # where tasks run: speed only
    # The validation split is the default eval text of decontamination and wins exact-dedup ties.
    return {"filter": rules, "validation_fraction": cfg.validation_fraction}


STAGES: tuple[StageSpec, ...] = (
    StageSpec("corpus", (), ("curation.corpus", "curation.documents", "assets.corpus"),
              lambda c: {"corpus": asdict(c.corpus), "source_signature": source_signature(c.corpus)},
              "Documents read from the configured source, with domain, relative source path and size."),
    StageSpec("filtered", ("corpus",),
              ("curation.filters", "curation.code_filters", "curation.dedup", "curation.decontamination",
               "curation.word_tokenizer", "curation.filter_stats", "curation.documents", "assets.filtered"),
              _filter_slice,
              "Rule sets per domain, exact and MinHash near dedup with cluster sizes, n-gram decontamination; "
              "kept and rejected sets."),
    StageSpec("tokenizer", ("filtered",), ("curation.tokenizer", "curation.documents", "assets.tokenizer"),
              lambda c: {"tokenizer": asdict(c.tokenizer), "validation_fraction": c.validation_fraction},
              "Byte-level BPE trained on the training split (tokenizer.json)."),
    StageSpec("mixed", ("filtered", "tokenizer"),
              ("curation.mixture", "curation.tokenizer", "curation.documents", "assets.mixed"),
              lambda c: {"mixture": asdict(c.mixture), "validation_fraction": c.validation_fraction},
              "Token shards per domain and split, and the training stream mixed by weight."),
    StageSpec("checkpoint", ("tokenizer", "mixed"),
              ("training", "kernels", "evaluation.plots", "assets.checkpoint"),
              lambda c: {"model": asdict(c.model), "train": asdict(c.train)},
              "A TorchTitan training run (torchrun, FSDP) on the mixed stream; DCP checkpoints.", resumable=True),
    StageSpec("eval", ("mixed", "checkpoint"),
              ("evaluation.perplexity", "evaluation.plots", "training.model", "training.config", "kernels",
               "assets.eval"),
              lambda c: {"eval": asdict(c.eval)},
              "Per-domain validation loss and bits-per-byte of the final checkpoint."),
)
STAGE_BY_NAME = {spec.name: spec for spec in STAGES}


def _source_files(module: str) -> list[Path]:
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:  # a module listed but absent: say so rather than hash nothing
        raise ModuleNotFoundError(f"a stage lists code module '{module}', which does not exist")
    origin = Path(found.origin)
    return sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]


def code_version(spec: StageSpec) -> str:
    digest = hashlib.sha256()
    for module in spec.code_modules:
        for path in _source_files(module):
            digest.update(f"{module}:{path.name}".encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def config_version(spec: StageSpec, cfg: ExperimentConfig) -> str:
    """What Dagster shows as the asset's code version: the stage's code and config slice, hashed together."""
    return fingerprint(spec.name, code_version(spec), spec.config_slice(cfg), {})


@dataclass
class PlanItem:
    stage: str
    action: str  # "reuse" or "run"
    reason: str
    fingerprint: str = ""  # known once every upstream output is known
    manifest: Manifest | None = None
    # The identity that went into the fingerprint, computed once (the corpus slice scans its source).
    config: dict | None = None
    code_version: str = ""
    # What a run is likely to cost: the build time of the stage's most recent output, if any.
    estimated_seconds: float | None = None


def plan(cfg: ExperimentConfig, store: Store) -> list[PlanItem]:
    """Walk the lineage top-down: reuse every output whose fingerprint exists, run the rest.

    A stage below one that must run is planned to run too; at run time it may still turn out a cache hit, when
    its upstream produced the same bytes as before.
    """
    items: dict[str, PlanItem] = {}
    for spec in STAGES:
        earlier = sorted(store.list(spec.name), key=lambda m: m.created_at)
        estimate = earlier[-1].build_seconds if earlier else None
        pending = [name for name in spec.upstream if items[name].manifest is None]
        if pending:
            items[spec.name] = PlanItem(spec.name, "run", f"upstream {', '.join(pending)} will run",
                                        estimated_seconds=estimate)
            continue
        upstream = {name: items[name].manifest for name in spec.upstream}
        config, code = spec.config_slice(cfg), code_version(spec)
        fp = fingerprint(spec.name, code, config, {name: m.content_hash for name, m in upstream.items()})
        found = store.find(spec.name, fp)
        if found is not None:
            items[spec.name] = PlanItem(spec.name, "reuse", "output with this fingerprint exists", fp, found,
                                        config=config, code_version=code)
        else:
            reason = _why_new(spec, config, code, earlier, upstream)
            items[spec.name] = PlanItem(spec.name, "run", reason, fp, estimated_seconds=estimate,
                                        config=config, code_version=code)
    return list(items.values())


def _why_new(spec: StageSpec, config: dict, code: str, earlier: list[Manifest], upstream: dict[str, Manifest]) -> str:
    """Explain a cache miss against the newest earlier output of the stage: config diff, code or upstream."""
    if not earlier:
        return "never materialized"
    last = earlier[-1]
    reasons = []
    old, new = flatten(last.config), flatten(config)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        reasons.append("config " + ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5]))
    if last.code_version != code:
        reasons.append("code changed")
    moved = [n for n in spec.upstream if last.upstream.get(n) != upstream[n].content_hash]
    if moved:
        reasons.append(f"upstream {', '.join(moved)} changed")
    return "; ".join(reasons) or "new fingerprint"
