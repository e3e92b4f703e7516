"""The experiment config: one typed tree composed by Hydra from ``conf/``, with command-line style overrides.

The dataclasses live beside the code they configure (``curation``, ``training``, ``evaluation``); this module
only assembles them and registers the schema with Hydra's ConfigStore, so every YAML file in ``conf/`` and every
override is checked against these types. A wrong key, type or group choice fails at once, naming the choices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from curation.corpus import CorpusConfig
from curation.filters import FilterConfig
from curation.mixture import MixtureConfig
from curation.tokenizer import TokenizerConfig
from evaluation.perplexity import EvalConfig
from training.config import INIT_MODES, ModelConfig, ParallelConfig, TrainConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


@dataclass
class StorageConfig:
    """Where things live. Never part of a fingerprint: moving the lab changes no bytes."""

    # The lab home holds the Dagster instance, the MLflow store, the DVC cache and remote, and the outputs.
    lab_home: str = ".lab"
    # Empty: a SQLite store in the lab home. Otherwise any MLflow tracking URI (http://..., postgresql://...).
    mlflow_tracking_uri: str = ""
    # Empty: a folder in the lab home. Otherwise a DVC remote URL such as s3://bucket/prefix.
    dvc_remote: str = ""
    # DVC remote options, e.g. {endpointurl: http://127.0.0.1:5000} for an S3-compatible server.
    dvc_remote_options: dict[str, str] = field(default_factory=dict)


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
class ExperimentConfig:
    name: str = "demo"
    # Share of documents held out for validation, by document hash; the tokenizer never sees them.
    validation_fraction: float = 0.05
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    parent: ParentConfig = field(default_factory=ParentConfig)


class ConfigError(ValueError):
    """A config or override that does not fit the schema; the message names the valid choices."""


ConfigStore.instance().store(name="experiment_schema", node=ExperimentConfig)


def _valid_keys_hint(message: str) -> str:
    """Add the valid keys of the node an unknown key was looked up in (OmegaConf names it as full_key)."""
    schema = OmegaConf.structured(ExperimentConfig)
    for line in message.splitlines():
        if "full_key:" in line:
            parent = line.split("full_key:", 1)[1].strip().rsplit(".", 1)[0] if "." in line else ""
            node = OmegaConf.select(schema, parent) if parent else schema
            if isinstance(node, DictConfig):
                return f"\nValid keys under '{parent or '<root>'}': {', '.join(sorted(node.keys()))}"
    return ""


def compose_experiment(overrides: list[str] | tuple[str, ...] = ()) -> tuple[ExperimentConfig, DictConfig]:
    """Compose ``conf/config.yaml`` with Hydra overrides into the typed experiment config."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR)):
            composed = compose(config_name="config", overrides=list(overrides))
        experiment = OmegaConf.to_object(composed)
    except (HydraException, OmegaConfBaseException) as error:
        message = str(error)
        if error.__cause__ is not None:
            message += f"\n{error.__cause__}"
        raise ConfigError(f"Invalid experiment config: {message}{_valid_keys_hint(message)}") from None
    assert isinstance(experiment, ExperimentConfig)
    if experiment.parent.mode not in INIT_MODES:
        raise ConfigError(f"parent.mode={experiment.parent.mode!r}; choose one of {', '.join(INIT_MODES)}")
    return experiment, composed


def lab_home(cfg: ExperimentConfig) -> Path:
    """The lab home: LAB_HOME from the environment wins, then storage.lab_home (relative to the repository)."""
    home = Path(os.environ.get("LAB_HOME") or cfg.storage.lab_home)
    return (home if home.is_absolute() else REPO_ROOT / home).resolve()
