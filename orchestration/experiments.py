"""The experiments the platform knows: the files in ``conf/experiment/`` plus every experiment launched with ``lab``.

An experiment is a name and its arms; an arm is a list of Hydra overrides that composes one lineage. A file in
``conf/experiment/`` is a one-arm experiment (``experiment=<file>``); ``lab materialize`` records what it launches
in the lab home (``<home>/experiments/<name>.json``, written atomically), a sweep as one experiment whose arms are
the cross product of its axes. The Dagster definitions, ``lab experiments`` and ``lab report`` all read this list.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestration.config import CONF_DIR

SEED_KEYS = ("train.seed",)


def slug(text: str) -> str:
    """A name Dagster accepts in asset keys, groups and jobs: letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"


@dataclass
class Arm:
    name: str  # the arm's label within its experiment, e.g. "docs=0.1 seed=0"; the experiment's name for one arm
    overrides: list[str]
    params: dict[str, str] = field(default_factory=dict)  # the swept values that set this arm apart


@dataclass
class Experiment:
    name: str
    arms: list[Arm]
    source: str = "lab"  # "conf": a file in conf/experiment/; "lab": launched with lab and recorded in the lab home
    axes: dict[str, list[str]] = field(default_factory=dict)  # swept key -> values
    baseline: str = ""  # the arm the report measures speedups against; empty: the first arm
    created_at: float = field(default_factory=time.time)
    preset: str = ""  # the research preset (conf/preset/) this experiment runs; empty: none
    preset_variant: str = ""  # "tiny": the preset's test-sized version

    @property
    def baseline_arm(self) -> str:
        return self.baseline or self.arms[0].name

    def arm_path(self, arm: Arm) -> list[str]:
        """The asset key prefix of an arm's own assets: the experiment, and the arm when there are several."""
        return [slug(self.name)] if len(self.arms) == 1 else [slug(self.name), slug(arm.name)]

    @classmethod
    def from_json(cls, raw: dict) -> Experiment:
        return cls(**{**raw, "arms": [Arm(**arm) for arm in raw["arms"]]})


def conf_experiments() -> list[Experiment]:
    return [Experiment(path.stem, [Arm(path.stem, [f"experiment={path.stem}"])], source="conf", created_at=0.0)
            for path in sorted((CONF_DIR / "experiment").glob("*.yaml"))]


def registry_dir(home: Path) -> Path:
    return home / "experiments"


def recorded_experiments(home: Path) -> list[Experiment]:
    folder = registry_dir(home)
    found = [Experiment.from_json(json.loads(path.read_text())) for path in folder.glob("*.json")] \
        if folder.is_dir() else []
    return sorted(found, key=lambda e: (e.created_at, e.name))


def known_experiments(home: Path) -> list[Experiment]:
    """conf/ first (so a shared trunk is named after the experiment it came from), then the recorded ones in order."""
    conf = conf_experiments()
    names = {e.name for e in conf}
    return conf + [e for e in recorded_experiments(home) if e.name not in names]


def find_experiment(home: Path, name: str) -> Experiment:
    for experiment in known_experiments(home):
        if experiment.name == name or slug(experiment.name) == name:
            return experiment
    names = ", ".join(e.name for e in known_experiments(home))
    raise ValueError(f"no experiment named {name!r}; known: {names} (see `lab experiments`)")


def record(home: Path, experiment: Experiment) -> None:
    """Write the experiment to the lab home atomically (a reader never sees half a file)."""
    folder = registry_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{experiment.name}.{os.getpid()}.tmp"
    partial.write_text(json.dumps(asdict(experiment), indent=2))
    partial.replace(folder / f"{experiment.name}.json")


def _short(key: str) -> str:
    """``mixture.weights.docs`` -> ``docs``: the label of a swept key inside an arm's name."""
    return key.rsplit(".", 1)[-1].lstrip("+~")


def sweep_arms(overrides: list[str], expand: list[list[str]]) -> tuple[dict[str, list[str]], list[Arm]]:
    """The arms of a Hydra multirun (its expansion given), named by the values that vary between them."""
    axes: dict[str, list[str]] = {}
    for arm in expand:
        for item in arm:
            key, _, value = item.partition("=")
            axes.setdefault(key, [])
            if value not in axes[key]:
                axes[key].append(value)
    swept = {key: values for key, values in axes.items() if len(values) > 1}
    arms = []
    for arm_overrides in expand:
        params = {k: v for k, _, v in (o.partition("=") for o in arm_overrides) if k in swept}
        name = " ".join(f"{_short(k)}={v}" for k, v in params.items()) or "arm"
        arms.append(Arm(name, arm_overrides, params))
    return swept, arms


def default_name(overrides: list[str], base: str) -> str:
    """``<base experiment>_<hash of the overrides>``: stable, so relaunching the same command finds its experiment."""
    digest = hashlib.sha256(json.dumps(overrides).encode()).hexdigest()[:6]
    return f"{base}_{digest}"
