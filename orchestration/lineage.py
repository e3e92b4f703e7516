"""The lineage as data: which stage depends on which, on what config and on what code.

This is the single place that decides identity. The Dagster assets, ``lab plan`` and ``lab materialize`` all
ask it, so the UI's staleness, the plan and the cache can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

from curation.corpus import source_signature
from orchestration.code_identity import changed_modules, combined_version, module_digests
from orchestration.config import ExperimentConfig, load_experiment
from orchestration.mixture_checks import check_mixture_domains
from orchestration.store import Manifest, Store, fingerprint, flatten


@dataclass(frozen=True)
class StageSpec:
    name: str
    upstream: tuple[str, ...]
    # Exactly the modules (or whole packages) whose code decides the stage's bytes: changing what one does re-runs
    # the stage. Plotting, reporting, tracking, export and CLI code is left out, as are the assets (thin glue).
    code_modules: tuple[str, ...]
    # The part of the experiment config that decides the stage's bytes (never paths, workers or storage).
    config_slice: Callable[[ExperimentConfig], dict]
    description: str
    # A resumable stage (training) keeps its interrupted partial output and continues from it.
    resumable: bool = False
    # The parent experiment's outputs the stage also depends on when the config names a parent (`parent.*`):
    # its checkpoint (upstream "parent"), and for eval also its eval (upstream "parent_eval", for forgetting and
    # the transfer matrix along a chain).
    parent_stages: tuple[str, ...] = ()


def _filter_slice(cfg: ExperimentConfig) -> dict:
    rules = asdict(cfg.filter)
    rules.pop("workers")  # speed only
    rules.pop("executor")  # where tasks run: speed only
    return {"filter": rules}  # filter.heldout included: held-out documents are chosen before the filters


_SIGNATURES: dict[str, str] = {}


def _corpus_slice(cfg: ExperimentConfig) -> dict:
    # What the source holds now, scanned once per process and corpus config (arms of a sweep share it).
    corpus = asdict(cfg.corpus)
    key = json.dumps(corpus, sort_keys=True)
    if key not in _SIGNATURES:
        _SIGNATURES[key] = source_signature(cfg.corpus)
    return {"corpus": corpus, "source_signature": _SIGNATURES[key]}


STAGES: tuple[StageSpec, ...] = (
    StageSpec("corpus", (), ("curation.corpus", "curation.documents"), _corpus_slice,
              "Documents read from the configured source, with domain, relative source path and size."),
    StageSpec("filtered", ("corpus",),
              ("curation.filters", "curation.code_filters", "curation.dedup", "curation.decontamination",
               "curation.word_tokenizer", "curation.executors", "curation.documents", "curation.heldout"),
              _filter_slice,
              "Rule sets per domain, exact and MinHash near dedup with cluster sizes, n-gram decontamination; "
              "kept and rejected sets."),
    StageSpec("tokenizer", ("filtered",), ("curation.tokenizer", "curation.documents"),
              lambda c: {"tokenizer": asdict(c.tokenizer)},
              "Byte-level BPE trained on the training split (tokenizer.json)."),
    StageSpec("mixed", ("filtered", "tokenizer"),
              ("curation.mixture", "curation.rehydration", "curation.packing", "curation.ledger", "curation.tokenizer",
               "curation.documents", "curation.heldout"),
              lambda c: {"mixture": asdict(c.mixture)},
              "Token shards per domain and split, and the training stream mixed by weight."),
    StageSpec("checkpoint", ("tokenizer", "mixed"),
              ("training.train", "training.config", "training.model", "training.data", "training.checkpoint",
               "training.lr_schedulers", "training.schedules", "training.cpu_compat", "training.job",
               "training.outputs", "kernels", "curation.packing", "evaluation.perplexity", "evaluation.bootstrap"),
              lambda c: {"model": asdict(c.model), "train": asdict(c.train)},
              "A TorchTitan training run (torchrun, FSDP) on the mixed stream; DCP checkpoints.", resumable=True,
              parent_stages=("checkpoint",)),
    StageSpec("eval", ("tokenizer", "mixed", "checkpoint"),
              ("evaluation.validation", "evaluation.perplexity", "evaluation.bootstrap", "evaluation.forgetting",
               "evaluation.downstream", "evaluation.downstream_tasks", "training.export", "training.model",
               "training.config", "training.outputs", "curation.packing", "curation.tokenizer", "curation.documents",
               "kernels"),
              lambda c: {"eval": asdict(c.eval)},
              "Per-domain validation loss and bits-per-byte with bootstrap intervals at every checkpoint, from where "
              "training started; downstream tasks (eval.downstream); forgetting for a child.",
              parent_stages=("checkpoint", "eval")),
)
STAGE_BY_NAME = {spec.name: spec for spec in STAGES}
# The upstream name under which a stage sees each of the parent's outputs.
PARENT_UPSTREAM = {"checkpoint": "parent", "eval": "parent_eval"}


def code_version(spec: StageSpec) -> str:
    """The stage's code identity: what its modules do (comments, formatting and docstrings do not count)."""
    return combined_version(module_digests(spec.code_modules))


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
    # The upstream outputs by name, once all are known; "parent" is the parent experiment's checkpoint.
    upstream: dict[str, Manifest] | None = None


@dataclass
class Parent:
    """The parent experiment's outputs (its checkpoint, which a child starts from, and its eval), and the step."""

    overrides: list[str]
    manifests: dict[str, Manifest | None]  # by stage; None: not materialized yet
    step: int | None = None

    @property
    def manifest(self) -> Manifest | None:
        """The parent's checkpoint output."""
        return self.manifests["checkpoint"]


MAX_PARENT_DEPTH = 8


def resolve_parent(cfg: ExperimentConfig, store: Store, depth: int = 0) -> Parent | None:
    """Plan the parent experiment and pick the checkpoint step to start from (its last one by default)."""
    if not cfg.parent.experiment:
        return None
    if depth >= MAX_PARENT_DEPTH:
        raise ValueError(f"parent chain deeper than {MAX_PARENT_DEPTH}: is an experiment its own ancestor?")
    overrides = list(cfg.parent.experiment)
    parent_cfg = load_experiment(overrides)
    manifests = {item.stage: item.manifest for item in plan(parent_cfg, store, depth + 1)}
    manifest = manifests["checkpoint"]
    if manifest is None:
        return Parent(overrides, manifests)
    steps = manifest.stats.get("checkpoint_steps", [])
    step = cfg.parent.step if cfg.parent.step is not None else max(steps, default=None)
    if step not in steps:
        raise ValueError(f"parent {' '.join(overrides)} has checkpoints at steps {steps}; set parent.step to one")
    return Parent(overrides, manifests, step)


def check_parent_fits(cfg: ExperimentConfig, parent: Parent, tokenizer: Manifest, mixed: Manifest) -> None:
    """Refuse a child the parent's weights cannot start: another vocabulary, model shape or (branch) data."""
    named, manifest = " ".join(parent.overrides), parent.manifest
    assert manifest is not None
    if tokenizer.content_hash != manifest.upstream["tokenizer"]:
        raise ValueError(f"the parent ({named}) was trained with another tokenizer: continual pretraining keeps "
                         "the parent's vocabulary, so keep the corpus, filter and tokenizer config of the parent")
    if asdict(cfg.model) != manifest.config["model"]:
        raise ValueError(f"model config differs from the parent's ({named}): its weights would not load")
    if cfg.parent.mode == "branch":
        same_batch = all(manifest.config["train"][k] == getattr(cfg.train, k) for k in ("global_batch_size", "seq_len"))
        if mixed.content_hash != manifest.upstream["mixed"] or not same_batch:
            raise ValueError(f"parent.mode=branch continues the parent's data stream ({named}): keep its mixture, "
                             "global_batch_size and seq_len, or use parent.mode=weights")
        if cfg.train.steps <= parent.step:
            raise ValueError(f"a branch from step {parent.step} needs train.steps above it (now {cfg.train.steps})")


def plan(cfg: ExperimentConfig, store: Store, depth: int = 0) -> list[PlanItem]:
    """Walk the lineage top-down: reuse every output whose fingerprint exists, run the rest.

    A stage below one that must run is planned to run too; at run time it may still turn out a cache hit, when
    its upstream produced the same bytes as before. A stage that follows a parent experiment (continual
    pretraining) also waits for the parent's checkpoint, whose content hash and step enter its fingerprint.
    """
    parent = resolve_parent(cfg, store, depth)
    items: dict[str, PlanItem] = {}
    for spec in STAGES:
        config, code = spec.config_slice(cfg), code_version(spec)
        follows = spec.parent_stages if parent is not None else ()
        if follows:
            config["parent"] = {"mode": cfg.parent.mode, "step": parent.step}
        pending = [name for name in spec.upstream if items[name].manifest is None]
        pending += [f"parent {stage} ({' '.join(parent.overrides)})" for stage in follows
                    if parent.manifests[stage] is None]
        if pending:
            nearest = nearest_output(store, spec.name, config)
            items[spec.name] = PlanItem(spec.name, "run", f"upstream {', '.join(pending)} will run",
                                        estimated_seconds=nearest.build_seconds if nearest else None,
                                        config=config, code_version=code)
            continue
        upstream = {name: items[name].manifest for name in spec.upstream}
        if follows:
            check_parent_fits(cfg, parent, items["tokenizer"].manifest, items["mixed"].manifest)
            upstream.update({PARENT_UPSTREAM[stage]: parent.manifests[stage] for stage in follows})
        fp = fingerprint(spec.name, code, config, {name: m.content_hash for name, m in upstream.items()})
        found = store.find(spec.name, fp)
        if found is not None:
            items[spec.name] = PlanItem(spec.name, "reuse", "output with this fingerprint exists", fp, found,
                                        config=config, code_version=code, upstream=upstream)
        else:
            nearest = nearest_output(store, spec.name, config)
            items[spec.name] = PlanItem(spec.name, "run", _why_new(spec, config, code, nearest, upstream), fp,
                                        estimated_seconds=nearest.build_seconds if nearest else None,
                                        config=config, code_version=code, upstream=upstream)
    check_mixture_domains(cfg, items["corpus"].manifest, items["filtered"].manifest)
    return list(items.values())


def nearest_output(store: Store, stage: str, config: dict) -> Manifest | None:
    """The earlier output of the stage whose config is closest to ``config`` (fewest differing keys; newest wins).

    A plan explains a miss and estimates its cost from this output: the same arm's previous build when there is
    one, else the arm nearest in config (same model and data size before another corpus), never merely the last.
    """
    new = flatten(config)

    def distance(manifest: Manifest) -> tuple[int, float]:
        old = flatten(manifest.config)
        return sum(old.get(k) != new.get(k) for k in old.keys() | new.keys()), -manifest.created_at

    return min(store.list(stage), key=distance, default=None)


def _why_new(spec: StageSpec, config: dict, code: str, last: Manifest | None,
             upstream: dict[str, Manifest]) -> str:
    """Explain a cache miss against the nearest earlier output of the stage: config diff, code or upstream."""
    if last is None:
        return "never materialized"
    reasons = []
    old, new = flatten(last.config), flatten(config)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        reasons.append("config " + ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5]))
    if last.code_version != code:
        # Manifests written before per-module digests were kept cannot say which module changed.
        modules = changed_modules(last.code_modules, module_digests(spec.code_modules)) if last.code_modules else []
        reasons.append(f"code changed: {', '.join(modules)}" if modules else "code changed")
    moved = [n for n in upstream if last.upstream.get(n) != upstream[n].content_hash]
    if moved:
        reasons.append(f"upstream {', '.join(moved)} changed")
    return "; ".join(reasons) or "new fingerprint"
