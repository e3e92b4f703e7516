"""Hydra composition of the experiment config: ``conf/config.yaml`` plus command-line style overrides.

The schema (``orchestration.config.ExperimentConfig``) is registered with Hydra's ConfigStore, so every YAML file
in ``conf/`` and every override is checked against its types. A wrong key, type or group choice fails at once,
naming the choices. Most callers want ``orchestration.config.load_experiment``, which caches what this composes.
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestration.config import CONF_DIR, ConfigError, ExperimentConfig
from training.config import INIT_MODES

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
    if experiment.validation_fraction is not None:
        experiment.filter.heldout.fraction = experiment.validation_fraction
    if experiment.parent.mode not in INIT_MODES:
        raise ConfigError(f"parent.mode={experiment.parent.mode!r}; choose one of {', '.join(INIT_MODES)}")
    return experiment, composed


