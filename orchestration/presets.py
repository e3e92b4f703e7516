"""Research presets: a published finding as an experiment group in ``conf/preset/<name>.yaml``, run by one command.

A preset names its arms (each a list of Hydra overrides on top of the preset's ``base``), its seeds, its baseline
arm, the analysis that states whether the finding held (``evaluation.findings``) and, for the two law presets, the
law fit (``evaluation.laws``). ``lab preset NAME [overrides]`` turns it into an experiment whose arms are
arm x seed, named ``"<arm> seed=<s>"``, and materializes it like any sweep; extra overrides apply to every arm,
which is how the same preset moves to a GPU (``model=... parallel=gpu_fsdp``) without editing it. ``--tiny`` swaps
``base`` (and any arm listed under ``tiny.arms``) for the preset's tiny version: what ``make test`` runs.

An arm may start from another arm of the same seed (``parent``, ``step``, ``mode``: a WSD cooldown branched from
the stable run, continual pretraining from a base run): its overrides then carry that arm's overrides as
``parent.experiment``, so the graph shows the edge and the parent is built first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from orchestration.config import CONF_DIR, ConfigError, load_experiment
from orchestration.experiments import Arm, Experiment, default_name

PRESET_DIR = CONF_DIR / "preset"
ARM_KEYS = {"overrides", "parent", "step", "mode"}
PRESET_KEYS = {"title", "finding", "source", "scale_note", "notes", "base", "tiny", "seeds", "baseline", "arms",
               "analysis", "law"}


@dataclass
class PresetArm:
    name: str
    overrides: list[str]
    parent: str = ""  # another arm of the preset this one starts from (same seed)
    step: int | None = None  # the parent's checkpoint step (None: its last)
    mode: str = "weights"  # weights | weights_and_optimizer | branch (see ParentConfig)


@dataclass
class Preset:
    name: str
    title: str
    finding: str  # the published direction, in one or two sentences
    source: str  # the paper
    base: list[str]
    arms: dict[str, PresetArm]
    seeds: list[int]
    baseline: str
    analysis: dict  # {"kind": <evaluation.findings analysis>, ...its parameters}
    law: dict = field(default_factory=dict)  # {"kind": lr_annealing | mixture, ...}; empty: no law fit
    # The test-sized version: {"base": [...], "arms": {name: [...]}, "steps": {name: step}, "seeds": [...],
    # "law": {...}}: base replaced; listed arms, branch steps and law keys replaced; the rest as above.
    tiny: dict = field(default_factory=dict)
    scale_note: str = ""  # why the preset is sized as it is
    notes: str = ""  # how to read the result at this scale (words only: every number comes from the lab home)
    is_tiny: bool = False

    def variant(self, tiny: bool) -> Preset:
        """The preset itself, or its tiny version (the test's): another base, and arms resized where listed."""
        if not tiny:
            return self
        arms = {name: PresetArm(name, list(self.tiny.get("arms", {}).get(name, arm.overrides)), arm.parent,
                                self.tiny.get("steps", {}).get(name, arm.step), arm.mode)
                for name, arm in self.arms.items()}
        return Preset(self.name, self.title, self.finding, self.source, list(self.tiny["base"]), arms,
                      list(self.tiny.get("seeds", self.seeds)), self.baseline, self.analysis,
                      {**self.law, **self.tiny.get("law", {})}, {}, self.scale_note, self.notes, is_tiny=True)


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Preset:
    """The preset file, checked: unknown keys, a baseline or parent that is not an arm, a law over unknown arms."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no preset named {name!r}; presets: {', '.join(preset_names())} (conf/preset/)")
    raw = yaml.safe_load(path.read_text())
    unknown = set(raw) - PRESET_KEYS
    if unknown:
        raise ConfigError(f"{path.name}: unknown keys {sorted(unknown)}; a preset has {sorted(PRESET_KEYS)}")
    arms = {arm_name: _arm(path.name, arm_name, spec) for arm_name, spec in raw["arms"].items()}
    preset = Preset(name, raw["title"], raw["finding"], raw["source"], list(raw["base"]), arms,
                    [int(s) for s in raw.get("seeds", [0, 1])], raw["baseline"], dict(raw["analysis"]),
                    dict(raw.get("law") or {}), dict(raw.get("tiny") or {}), raw.get("scale_note", ""),
                    raw.get("notes", ""))
    _check(path.name, preset)
    return preset


def _arm(file: str, name: str, spec: list | dict) -> PresetArm:
    if isinstance(spec, list):
        return PresetArm(name, [str(o) for o in spec])
    unknown = set(spec) - ARM_KEYS
    if unknown:
        raise ConfigError(f"{file}: arm {name!r} has unknown keys {sorted(unknown)}; an arm has {sorted(ARM_KEYS)}")
    return PresetArm(name, [str(o) for o in spec.get("overrides", [])], spec.get("parent", ""), spec.get("step"),
                     spec.get("mode", "weights"))


def _check(file: str, preset: Preset) -> None:
    names = set(preset.arms)
    if preset.baseline not in names:
        raise ConfigError(f"{file}: baseline {preset.baseline!r} is not an arm; arms: {', '.join(preset.arms)}")
    for arm in preset.arms.values():
        if arm.parent and arm.parent not in names:
            raise ConfigError(f"{file}: arm {arm.name!r} starts from {arm.parent!r}, which is not an arm")
    law_arms = set(preset.law.get("fit", [])) | set(preset.law.get("predict", []))
    if law_arms - names:
        raise ConfigError(f"{file}: the law names arms that are not arms: {sorted(law_arms - names)}")
    if len(preset.seeds) < 1 or (preset.tiny and "base" not in preset.tiny):
        raise ConfigError(f"{file}: a preset needs at least one seed, and its tiny version a base")


def _quoted(overrides: list[str]) -> str:
    """A list of overrides as one Hydra list value: each quoted, so that '=' and ',' inside stay in the element."""
    escaped = [o.replace("\\", "\\\\").replace("'", "\\'") for o in overrides]
    return "[" + ",".join(f"'{o}'" for o in escaped) + "]"


def arm_overrides(preset: Preset, arm: PresetArm, seed: int, extra: list[str]) -> list[str]:
    """base, the caller's extra overrides, the arm's own, its seed, and the parent arm's overrides (same seed)."""
    overrides = [*preset.base, *extra, *arm.overrides, f"train.seed={seed}"]
    if arm.parent:
        parent = arm_overrides(preset, preset.arms[arm.parent], seed, extra)
        overrides += [f"parent.experiment={_quoted(parent)}", f"parent.mode={arm.mode}"]
        if arm.step is not None:
            overrides.append(f"parent.step={arm.step}")
    return overrides


def arm_label(arm: str, seed: int) -> str:
    return f"{arm} seed={seed}"


def preset_experiment(preset: Preset, extra: list[str], name: str = "") -> Experiment:
    """The experiment of a preset: one arm per (arm, seed), parents listed before their children."""
    arms = [Arm(arm_label(arm.name, seed), arm_overrides(preset, arm, seed, extra),
                {"arm": arm.name, "train.seed": str(seed)})
            for arm in _parents_first(preset) for seed in preset.seeds]
    name = name or (preset.name if not extra else default_name(extra, preset.name))
    return Experiment(name, arms, axes={"arm": list(preset.arms), "train.seed": [str(s) for s in preset.seeds]},
                      baseline=arm_label(preset.baseline, preset.seeds[0]), preset=preset.name,
                      preset_variant="tiny" if preset.is_tiny else "")


def preset_of(experiment: Experiment) -> Preset:
    """The preset (or its tiny version) an experiment runs."""
    return load_preset(experiment.preset).variant(experiment.preset_variant == "tiny")


def _parents_first(preset: Preset) -> list[PresetArm]:
    ordered: list[PresetArm] = []

    def visit(arm: PresetArm, chain: tuple[str, ...]) -> None:
        if arm.name in chain:
            raise ConfigError(f"preset {preset.name}: arms start from each other in a circle: {' -> '.join(chain)}")
        if arm.parent:
            visit(preset.arms[arm.parent], (*chain, arm.name))
        if arm not in ordered:
            ordered.append(arm)

    for arm in preset.arms.values():
        visit(arm, ())
    return ordered


def arm_waves(experiment: Experiment) -> list[list[Arm]]:
    """The arms in waves: those whose parent is no arm of this experiment first, then their children, and so on."""
    by_overrides = {tuple(arm.overrides): arm for arm in experiment.arms}
    depth: dict[str, int] = {}

    def level(arm: Arm) -> int:
        if arm.name not in depth:
            parent = _parent_overrides(arm)
            depth[arm.name] = level(by_overrides[parent]) + 1 if parent in by_overrides else 0
        return depth[arm.name]

    waves: dict[int, list[Arm]] = {}
    for arm in experiment.arms:
        waves.setdefault(level(arm), []).append(arm)
    return [waves[k] for k in sorted(waves)]


def _parent_overrides(arm: Arm) -> tuple[str, ...]:
    return tuple(load_experiment(arm.overrides).parent.experiment)


