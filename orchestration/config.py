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
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
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
            if isinstance(node, DictConfig) and len(node):  # a dict field has no fixed keys to list
                return f"\nValid keys under '{parent or '<root>'}': {', '.join(sorted(node.keys()))}"
    return ""


def _split_dict_overrides(overrides: list[str]) -> tuple[list[str], list[Override]]:
    """The overrides Hydra applies, and those whose value is a mapping (``key={...}``), which are ours to set.

    A later override inside a key set by a mapping would be applied before it (Hydra composes first), so that
    order is refused rather than silently reversed.
    """
    hydra_overrides, dict_overrides = [], []
    for override in OverridesParser.create().parse_overrides(overrides):
        if isinstance(override.value(), dict) and override.package is None and not override.is_delete():
            dict_overrides.append(override)
            continue
        for earlier in dict_overrides:
            if override.key_or_group.startswith(f"{earlier.key_or_group}."):
                raise ConfigError(f"'{override.input_line}' comes after '{earlier.input_line}', which sets the whole "
                                  f"of {earlier.key_or_group}: give that key's value in the mapping instead")
        hydra_overrides.append(override.input_line)
    return hydra_overrides, dict_overrides


def _set_mapping(composed: DictConfig, key: str, value: object, add: bool) -> None:
    """Set ``key`` as a command-line mapping asks: a dict field gets exactly the mapping; a config section (a
    dataclass, e.g. ``mixture.replay``) gets the fields it names, each by the same rule; anything else the value."""
    node = OmegaConf.select(composed, key, default=None)
    if isinstance(value, dict) and isinstance(node, DictConfig) and OmegaConf.get_type(node) is not dict:
        for name, item in value.items():
            _set_mapping(composed, f"{key}.{name}", item, add)
        return
    # Emptied, then merged: merging converts the values to the field's types (a DomainCap, a float) and checks them.
    OmegaConf.update(composed, key, {} if isinstance(value, dict) else value, merge=False, force_add=add)
    if isinstance(value, dict):
        OmegaConf.update(composed, key, value, merge=True, force_add=True)


def compose_experiment(overrides: list[str] | tuple[str, ...] = ()) -> tuple[ExperimentConfig, DictConfig]:
    """Compose ``conf/config.yaml`` with Hydra overrides into the typed experiment config.

    A mapping on the command line sets a dict field to exactly that mapping (Hydra alone would merge it into the
    defaults): ``'mixture.weights={web: 0.7, code: 0.3}'`` mixes those two domains and no other, whatever the
    mixture group's weights were; likewise ``mixture.replay.weights``, ``mixture.phases.0.weights``,
    ``corpus.domains`` and storage options, with or without a leading ``+``. A mapping given for a config section
    (``'mixture.replay={fraction: 0.25, weights: {web: 1}}'``) sets only the fields it names, by the same rule.
    One key of a dict is still changed alone with ``mixture.weights.docs=0.3``; config files merge as before.
    """
    try:
        hydra_overrides, dict_overrides = _split_dict_overrides(list(overrides))
        with initialize_config_dir(config_dir=str(CONF_DIR)):
            composed = compose(config_name="config", overrides=hydra_overrides)
        for override in dict_overrides:
            add = override.is_add() or override.is_force_add()
            _set_mapping(composed, override.key_or_group, override.value(), add)
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
