"""The Dagster ``Definitions``: the lineage of every known experiment, one asset per stage and arm, shared work once.

The assets are generated from the stage list (``orchestration.lineage.STAGES``) over the graph of known arms
(``orchestration.graph``): the DAG is declared once. Each asset's ``code_version`` is its arm's stage identity
(code and config slice) and each materialization's data version is the output's content hash, so Dagster's
staleness says what ``lab plan`` says, arm by arm. Each experiment gets a job (launchpad, schedules) and a
``report`` asset comparing its arms. A sensor evaluates each checkpoint while its training runs
(``orchestration.live_eval``). A new experiment recorded by ``lab`` appears after a code-location reload,
which ``lab`` triggers on a running webserver.
"""


from collections.abc import Callable

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    Definitions,
    MaterializeResult,
    RetryPolicy,
    asset,
    define_asset_job,
)

from assets import checkpoint, corpus, filtered, law_fit, mixed, report, tokenizer
from assets import eval as eval_stage
from orchestration.automation import automation_config, eval_condition, eval_sensor, stale_schedule
from orchestration.checks import asset_checks
from orchestration.config import default_lab_home
from orchestration.dagster_compat import fix_pool_wait
from orchestration.experiments import known_experiments, slug
from orchestration.graph import LAW_FIT, REPORT, Graph, Node, build_graph
from orchestration.launch import launch
from orchestration.lineage import STAGE_BY_NAME
from orchestration.live_eval import live_evaluation, live_evaluation_sensor
from orchestration.resources import LabResource

BUILDS = {"corpus": corpus.build, "filtered": filtered.build, "tokenizer": tokenizer.build, "mixed": mixed.build,
          "checkpoint": checkpoint.build, "eval": eval_stage.build}
# Training takes the host: at most one checkpoint step runs at a time (the pool's limit is set in dagster.yaml).
TRAINING_POOL = "training"
# Every process that executes a run loads these definitions: there, a step waiting for the pool must not spin.
fix_pool_wait()


def stage_asset(node: Node) -> AssetsDefinition:
    spec, build = STAGE_BY_NAME[node.stage], BUILDS[node.stage]
    training = node.stage == "checkpoint"

    @asset(
        key=AssetKey(node.path), deps=[AssetKey(dep) for dep in node.deps], code_version=node.code_version,
        group_name=node.group, description=spec.description, kinds={"pytorch"} if training else {"python"},
        pool=TRAINING_POOL if training else None,
        automation_condition=eval_condition(node) if node.stage == "eval" else None,
        # One retry: a killed training run resumes from its last checkpoint instead of failing the Dagster run.
        retry_policy=RetryPolicy(max_retries=1) if training else None,
        metadata={"stage": node.stage, "experiment": node.experiment, "arm": node.arm.name,
                  "overrides": " ".join(node.arm.overrides), "shared_by": ", ".join(node.arms)},
    )
    def _stage(context: AssetExecutionContext, lab: LabResource) -> MaterializeResult:
        return lab.materialize(context, node.arm.overrides, node.stage, build, node.experiment, node.arm.name)

    return _stage


def experiment_asset(experiment: str, name: str, deps: set[tuple[str, ...]], description: str,
                     materialize: Callable[[AssetExecutionContext, str], MaterializeResult]) -> AssetsDefinition:
    """An asset of the experiment itself, above its arms (its law fit, its report)."""

    @asset(key=AssetKey([slug(experiment), name]), deps=[AssetKey(list(dep)) for dep in sorted(deps)],
           group_name=slug(experiment), kinds={"python"}, description=description)
    def _experiment_asset(context: AssetExecutionContext) -> MaterializeResult:
        return materialize(context, experiment)

    return _experiment_asset


def arm_outputs(graph: Graph, experiment: str) -> set[tuple[str, ...]]:
    """The asset keys of every arm's checkpoint and eval: what the experiment's own assets read."""
    return {tuple(arm.paths[stage]) for arm in graph.experiment_arms(experiment) for stage in ("checkpoint", "eval")}


def law_fit_asset(graph: Graph, experiment: str) -> AssetsDefinition:
    return experiment_asset(experiment, LAW_FIT, arm_outputs(graph, experiment),
                            f"The law {experiment} fits over its arms: parameters, residuals, held-out errors, and a "
                            "prediction for a new arm to run.", law_fit.materialize)


def report_asset(graph: Graph, experiment: str) -> AssetsDefinition:
    law = {tuple(key) for key in graph.experiment_keys(experiment) if key[-1] == LAW_FIT}
    return experiment_asset(experiment, REPORT, arm_outputs(graph, experiment) | law,
                            f"The arms of {experiment} compared: loss curves, per-domain results against the swept "
                            "parameters, tokens to a target loss, LR schedules, and a table of every arm.",
                            report.materialize)


def build_definitions(graph: Graph) -> Definitions:
    assets = [stage_asset(node) for node in graph.nodes.values()]
    assets += [report_asset(graph, experiment.name) for experiment in graph.experiments]
    assets += [law_fit_asset(graph, experiment.name) for experiment in graph.experiments
               if [slug(experiment.name), LAW_FIT] in graph.experiment_keys(experiment.name)]
    jobs = [launch, live_evaluation]
    for experiment in graph.experiments:
        keys = [AssetKey(path) for arm in graph.experiment_arms(experiment.name) for path in arm.paths.values()]
        own = [AssetKey(key) for key in graph.experiment_keys(experiment.name)]
        selection = AssetSelection.assets(*keys).upstream() | AssetSelection.assets(*own)
        jobs.append(define_asset_job(
            f"experiment_{slug(experiment.name)}", selection=selection, tags={"lab/experiment": experiment.name},
            description=f"Materialize every arm of {experiment.name} and its report; what is fresh is reused."))
    return Definitions(assets=assets, asset_checks=asset_checks(graph), jobs=jobs,
                       schedules=[stale_schedule(graph, automation_config())],
                       sensors=[eval_sensor(graph), live_evaluation_sensor],
                       resources={"lab": LabResource()})


def load_definitions() -> Definitions:
    return build_definitions(build_graph(known_experiments(default_lab_home())))


defs = load_definitions()
