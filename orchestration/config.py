"""The experiment config: one typed tree composed by Hydra from ``conf/``, with command-line style overrides.

The dataclasses live beside the code they configure (each package's ``config`` module); this module assembles
them into ``ExperimentConfig``, and ``load_experiment`` composes an arm once (``orchestration.compose`` checks
every YAML file in ``conf/`` and every override against these types) and caches it, so that planning many arms
imports neither Hydra nor the libraries the stages use.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.config import CorpusConfig, FilterConfig, MixtureConfig, TokenizerConfig
from evaluation.config import EvalConfig
from orchestration.cluster_launch import LauncherConfig
from training.config import ModelConfig, ParallelConfig, TrainConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


@dataclass
class StorageConfig:
    """Where things live. Never part of a fingerprint: moving the lab changes no bytes."""

    # The lab home holds the Dagster instance, the MLflow store, the DVC cache and remote, and the outputs.
    lab_home: str = ".lab"
    # Empty: stage outputs and manifests in the lab home's store folder. Otherwise an fsspec URL, s3://bucket/prefix,
    # that holds them, and by default also the DVC remote (<url>/dvc) and MLflow's artifacts (<url>/mlflow-artifacts).
    # LAB_STORE_URL in the environment wins. Endpoint and credentials come from the AWS chain only (AWS_ENDPOINT_URL,
    # AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), never from here: see orchestration/object_store.py.
    store_url: str = ""
    # The bound of the local cache (<lab home>/cache/store) that outputs in store_url are built in and read back
    # from, in GB; the least recently used outputs are deleted beyond it.
    cache_gb: float = 50.0
    # Empty: a SQLite store in the lab home. Otherwise any MLflow tracking URI (http://..., postgresql://...).
    mlflow_tracking_uri: str = ""
    # Empty: a folder in the lab home. Otherwise a DVC remote URL such as s3://bucket/prefix.
    dvc_remote: str = ""
    # DVC remote options, e.g. {endpointurl: http://127.0.0.1:5000} for an S3-compatible server.
    dvc_remote_options: dict[str, str] = field(default_factory=dict)
    # Where people open MLflow's UI (`make ui` serves it here): Dagster's metadata links each run to it.
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    # The Dagster instance's `storage` block. Empty: dagster.yaml's own (SQLite in the lab home). The shared
    # profile (conf/storage/shared.yaml) puts a `postgres:` block here whose connection settings are `env:`
    # references, which Dagster resolves from the environment: never a credential in the config.
    dagster_storage: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParentConfig:
    """Start training from another experiment's checkpoint: continual pretraining, or a WSD branch.

    The parent is named by the Hydra overrides that compose it (e.g. ["experiment=demo"]); its identity in the
    lineage is the content hash of its checkpoint output, not these strings.
    """

    # Overrides composing the parent experiment; empty: train from scratch.
    experiment: list[str] = field(default_factory=list)
    # The parent's checkpoint step to start from; null: its last checkpoint.
    step: int | None = None
    # weights: model only, fresh optimizer, step 0 (continual pretraining with a rewarmed schedule).
    # weights_and_optimizer: model and AdamW moments, step 0.
    # branch: everything (optimizer, schedule position, loader, step): the parent run continues from `step`
    # into a new output, e.g. a WSD cooldown of another length. Needs the parent's model, data and batch shape.
    mode: str = "weights"


@dataclass
class ChecksConfig:
    """Asset checks on an experiment's outputs (``orchestration.checks``); never part of a fingerprint."""

    # The mixture ledger's realized share of each domain may differ from its weight by this much (absolute): a
    # stream of whole documents cannot hit a weight exactly.
    mixture_share_tolerance: float = 0.05


@dataclass
class AutomationConfig:
    """The lab-wide schedule (``orchestration.automation``), read from the default composition (conf/config.yaml)."""

    # When the schedule re-materializes what is stale across the known experiments (cron, in `timezone`).
    # LAB_SCHEDULE_CRON in the environment wins (the tests tick it every minute).
    schedule_cron: str = "0 3 * * *"
    timezone: str = "UTC"


@dataclass
class ExperimentConfig:
    name: str = "demo"
    # Former name of filter.heldout.fraction, still read from older experiment files: when set, it sets that
    # (held-out documents are configured under filter.heldout: fraction and per-domain minimums).
    validation_fraction: float | None = None
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    # Where the checkpoint's training runs (this node, Kubernetes, Slurm): in no stage's config slice.
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    parent: ParentConfig = field(default_factory=ParentConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    automation: AutomationConfig = field(default_factory=AutomationConfig)


class ConfigError(ValueError):
    """A config or override that does not fit the schema; the message names the valid choices."""


STORAGE_PROFILE_VARIABLE = "LAB_STORAGE"


def with_storage_profile(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """The overrides with the lab home's storage profile (``LAB_STORAGE=shared``: conf/storage/shared.yaml) first.

    The Dagster instance and the MLflow store serve the whole lab home, so the profile comes from the environment,
    like LAB_HOME, and is the same for every experiment: it is not recorded with an experiment's overrides.
    """
    profile = os.environ.get(STORAGE_PROFILE_VARIABLE, "")
    if not profile or any(o.lstrip("+~").split("=")[0] == "storage" for o in overrides):
        return list(overrides)
    return [f"storage={profile}", *overrides]


def lab_home(cfg: ExperimentConfig) -> Path:
    """The lab home: LAB_HOME from the environment wins, then storage.lab_home (relative to the repository)."""
    home = Path(os.environ.get("LAB_HOME") or cfg.storage.lab_home)
    return (home if home.is_absolute() else REPO_ROOT / home).resolve()


STORE_URL_VARIABLE = "LAB_STORE_URL"


def store_url(cfg: ExperimentConfig) -> str:
    """The object store of the outputs (LAB_STORE_URL wins over storage.store_url); empty: the lab home's folder."""
    return os.environ.get(STORE_URL_VARIABLE) or cfg.storage.store_url


def default_lab_home() -> Path:
    """The lab home before any experiment is composed (the list of experiments, the config cache live there)."""
    return lab_home(ExperimentConfig())


def lab_storage() -> StorageConfig:
    """The lab home's storage: the default composition's, under the storage profile of the environment."""
    return load_experiment([]).storage


def _schema_digest(node: type = ExperimentConfig) -> str:
    """The shape of the config schema (field names, types, defaults): a cached config is only valid for it."""
    parts = [f"{node.__module__}.{node.__qualname__}"]  # where unpickling finds the class
    for spec in dataclasses.fields(node):
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        parts.append(f"{spec.name}:{spec.type}={default!r}")
        if dataclasses.is_dataclass(default):
            parts.append(_schema_digest(type(default)))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _conf_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        digest.update(path.relative_to(CONF_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


_COMPOSED: dict[tuple[str, ...], ExperimentConfig] = {}


def load_experiment(overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """``compose_experiment`` once per overrides (after the storage profile's): remembered in the process and
    cached on disk.

    Hydra's composition takes about 0.2 s; a plan over a 50-arm sweep would spend 10 s composing. The disk cache
    (``<lab home>/cache/configs``) is keyed by the overrides, every file in ``conf/`` and the schema's shape, so
    editing an experiment file or a dataclass field composes afresh. Errors are never cached.
    """
    key = tuple(with_storage_profile(overrides))
    if key not in _COMPOSED:
        name = hashlib.sha256(json.dumps([key, _conf_digest(), _schema_digest()]).encode()).hexdigest()[:24]
        cached = default_lab_home() / "cache" / "configs" / f"{name}.pkl"
        if cached.is_file():
            _COMPOSED[key] = pickle.loads(cached.read_bytes())
        else:
            from orchestration.compose import compose_experiment  # Hydra: imported only when composing

            _COMPOSED[key] = compose_experiment(list(key))[0]
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(pickle.dumps(_COMPOSED[key]))
            partial.replace(cached)
    return copy.deepcopy(_COMPOSED[key])
