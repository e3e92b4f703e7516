"""The asset graph over every known arm: work that arms share is one node, arms diverge where their configs do.

Each arm's stage gets a *recipe*: its stage's code version and config slice, its upstream recipes and, for a
stage that follows a parent experiment, the parent's checkpoint recipe and the step and mode taken from it. Arms
with equal recipes for a stage build the same bytes, so they share one asset, named after the first arm that has
it (experiments in ``conf/`` first, parents before children). This is Marin's rule for equal step hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestration.config import ExperimentConfig, load_experiment
from orchestration.experiments import Arm, Experiment, default_name, slug
from orchestration.lineage import PARENT_UPSTREAM, STAGES, config_version
from orchestration.store import fingerprint

REPORT = "report"
LAW_FIT = "law_fit"  # a law preset's fit over its arms (orchestration.law_fits), upstream of its report


@dataclass
class Node:
    """One asset: a stage built by its owner arm's overrides, shared by every arm listed in ``arms``."""

    path: list[str]  # the asset key
    stage: str
    group: str  # the owner's experiment (Dagster group)
    experiment: str
    arm: Arm  # the owner: its overrides build this node
    code_version: str
    deps: list[list[str]]
    arms: list[str] = field(default_factory=list)  # "experiment/arm" of every arm that has this node


@dataclass
class ArmLineage:
    experiment: Experiment
    arm: Arm
    cfg: ExperimentConfig
    paths: dict[str, list[str]]  # stage -> asset key of that arm's node


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)  # by recipe
    arms: list[ArmLineage] = field(default_factory=list)
    experiments: list[Experiment] = field(default_factory=list)

    def arm(self, experiment: str, arm: str) -> ArmLineage:
        return next(a for a in self.arms if a.experiment.name == experiment and a.arm.name == arm)

    def experiment_arms(self, experiment: str) -> list[ArmLineage]:
        return [a for a in self.arms if a.experiment.name == experiment]

    def experiment_keys(self, experiment: str) -> list[list[str]]:
        """The experiment's own assets above its arms: its law fit (a law preset) and its report."""
        known = next(e for e in self.experiments if e.name == experiment)
        return [[slug(experiment), LAW_FIT]] * bool(law_of(known)) + [[slug(experiment), REPORT]]


def _stage_identity(cfg: ExperimentConfig, stage: str) -> str:
    spec = next(s for s in STAGES if s.name == stage)
    version = config_version(spec, cfg)
    if spec.parent_stages and cfg.parent.experiment:
        # The configured step (None: the parent's last); the plan resolves it against the parent's output.
        version = fingerprint(stage, version, {"mode": cfg.parent.mode, "step": cfg.parent.step}, {})
    return version


def law_of(experiment: Experiment) -> dict:
    """The law a preset experiment fits ({"kind", "fit", "predict", ...}); empty for any other experiment."""
    from orchestration.presets import preset_of

    return preset_of(experiment).law if experiment.preset else {}


def _has_parent(experiment: Experiment) -> bool:
    return any(load_experiment(arm.overrides).parent.experiment for arm in experiment.arms)


def build_graph(experiments: list[Experiment]) -> Graph:
    """Nodes for every arm of every experiment; parents not known as an experiment are added as their own."""
    graph = Graph()
    # Parents before children, so a shared trunk is named after the experiment without a parent.
    ordered = sorted(experiments, key=lambda e: (e.source != "conf", _has_parent(e), e.created_at, e.name))
    by_overrides: dict[tuple[str, ...], ArmLineage] = {}

    def add_arm(experiment: Experiment, arm: Arm) -> ArmLineage:
        cfg = load_experiment(arm.overrides)
        parent_paths = None
        if cfg.parent.experiment:
            parent_paths = lineage_of_parent(list(cfg.parent.experiment)).paths
        recipes: dict[str, str] = {}
        paths: dict[str, list[str]] = {}
        for spec in STAGES:
            upstream = {name: recipes[name] for name in spec.upstream}
            deps = [paths[name] for name in spec.upstream]
            for stage in spec.parent_stages if parent_paths is not None else ():
                upstream[PARENT_UPSTREAM[stage]] = "/".join(parent_paths[stage])
                deps.append(parent_paths[stage])
            code = _stage_identity(cfg, spec.name)
            recipe = fingerprint(spec.name, code, {}, upstream)
            recipes[spec.name] = recipe
            if recipe not in graph.nodes:
                graph.nodes[recipe] = Node([*experiment.arm_path(arm), spec.name], spec.name, slug(experiment.name),
                                           experiment.name, arm, code, deps)
            graph.nodes[recipe].arms.append(f"{experiment.name}/{arm.name}")
            paths[spec.name] = graph.nodes[recipe].path
        lineage = ArmLineage(experiment, arm, cfg, paths)
        graph.arms.append(lineage)
        by_overrides.setdefault(tuple(arm.overrides), lineage)
        return lineage

    def lineage_of_parent(overrides: list[str]) -> ArmLineage:
        if tuple(overrides) not in by_overrides:
            known = next((e for e in ordered if any(a.overrides == overrides for a in e.arms)), None)
            # A parent nobody recorded becomes an experiment of its own.
            name = default_name(overrides, load_experiment(overrides).name)
            add_experiment(known or Experiment(name, [Arm(name, overrides)]))
        return by_overrides[tuple(overrides)]

    def add_experiment(experiment: Experiment) -> None:
        if experiment in graph.experiments:
            return
        graph.experiments.append(experiment)
        for arm in experiment.arms:
            add_arm(experiment, arm)

    for experiment in ordered:
        add_experiment(experiment)
    return graph
