"""The lab's automation in the Dagster daemon: a schedule that catches up what is stale, and eval after training.

``rematerialize_stale`` (a schedule, cron from ``automation.schedule_cron``; stopped until switched on in the UI's
Automation tab): on each tick, the plan of every arm of every known experiment (``runner.stale_keys``, what
``lab plan`` says) names what would re-run; the schedule requests one run of those assets that were materialized
before (a never-materialized experiment is left to ``lab materialize`` or the launchpad: a tick must not start
the demo's training by itself), plus each experiment's report when an asset it compares is among them. When
nothing is stale the tick is skipped, saying so.

``eval_follows_checkpoint`` (an automation condition sensor, running by default): an arm's ``eval`` runs when its
own checkpoint has a new materialization and nothing it reads is missing or in progress. Unlike
``AutomationCondition.eager()`` it does not react to an eval that is merely missing, nor to ``mixed`` alone
(whose new stream needs a new checkpoint first), so switching the sensor on after downtime starts an eval only
for a checkpoint that changed meanwhile.
"""

import os

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from orchestration.config import AutomationConfig, load_experiment
from orchestration.experiments import slug
from orchestration.graph import REPORT, Graph, Node
from orchestration.lineage import STAGE_BY_NAME
from orchestration.runner import stale_keys

SCHEDULE_NAME = "rematerialize_stale"
EVAL_SENSOR_NAME = "eval_follows_checkpoint"
TAGS = {"lab/schedule": SCHEDULE_NAME}
UNFINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def automation_config() -> AutomationConfig:
    """The lab-wide automation config: the default composition's, with LAB_SCHEDULE_CRON from the environment first."""
    cfg = load_experiment([]).automation
    cfg.schedule_cron = os.environ.get("LAB_SCHEDULE_CRON") or cfg.schedule_cron
    return cfg


def stale_selection(graph: Graph, instance: DagsterInstance) -> tuple[list[list[str]], list[str]]:
    """The keys to re-materialize (stale by the plan and materialized before, and the reports they feed), and
    a line for each experiment that could not be planned."""
    planned: dict[tuple[str, ...], None] = {}  # ordered and without repeats: arms share work
    problems = []
    for experiment in graph.experiments:
        try:
            stale = stale_keys(graph, experiment)
        except ValueError as error:  # a config the plan refuses: name it and carry on with the others
            problems.append(f"{experiment.name}: {error}")
            continue
        planned.update((tuple(key), None) for keys in stale.values() for key in keys)
    selected = [key for key in planned if materialized(instance, key)]
    for experiment in graph.experiments:
        report = (slug(experiment.name), REPORT)
        compared = {tuple(arm.paths[stage]) for arm in graph.experiment_arms(experiment.name)
                    for stage in ("checkpoint", "eval")}
        if not compared.isdisjoint(selected) and materialized(instance, report):
            selected.append(report)
    return [list(key) for key in selected], problems


def materialized(instance: DagsterInstance, key: tuple[str, ...]) -> bool:
    return instance.get_latest_materialization_event(AssetKey(list(key))) is not None


def stale_schedule(graph: Graph, cfg: AutomationConfig) -> ScheduleDefinition:
    @schedule(name=SCHEDULE_NAME, cron_schedule=cfg.schedule_cron, execution_timezone=cfg.timezone,
              target=AssetSelection.all(), default_status=DefaultScheduleStatus.STOPPED,
              description="Re-materializes what is stale across the known experiments (as `lab plan` says), "
                          "in one run; skips the tick when everything is fresh. Cron: automation.schedule_cron.")
    def _rematerialize_stale(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        # Until its run has materialized them, the same assets are still stale: one run at a time.
        unfinished = context.instance.get_runs(RunsFilter(tags=TAGS, statuses=UNFINISHED), limit=1)
        if unfinished:
            return SkipReason(f"the run of an earlier tick ({unfinished[0].run_id}) has not finished")
        keys, problems = stale_selection(graph, context.instance)
        for problem in problems:
            context.log.warning(f"not planned: {problem}")
        if not keys:
            return SkipReason(f"every materialized asset of the {len(graph.experiments)} known experiments is "
                              "fresh" + (f" ({len(problems)} could not be planned)" if problems else ""))
        tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
        return RunRequest(run_key=f"{SCHEDULE_NAME}@{tick}", asset_selection=[AssetKey(key) for key in keys],
                          tags=TAGS)

    return _rematerialize_stale


def eval_condition(node: Node) -> AutomationCondition:
    """Run an eval node when its own checkpoint has a new materialization (see the module docstring)."""
    # A node's deps follow its stage's upstream list (a parent's checkpoint comes last).
    checkpoint = node.deps[STAGE_BY_NAME["eval"].upstream.index("checkpoint")]
    new_checkpoint = AutomationCondition.any_deps_updated().allow(AssetSelection.assets(AssetKey(checkpoint)))
    return (new_checkpoint.since_last_handled() & ~AutomationCondition.any_deps_missing()
            & ~AutomationCondition.any_deps_in_progress() & ~AutomationCondition.in_progress()
            ).with_label("eval follows a new checkpoint")


def eval_sensor(graph: Graph) -> AutomationConditionSensorDefinition:
    evals = [AssetKey(node.path) for node in graph.nodes.values() if node.stage == "eval"]
    return AutomationConditionSensorDefinition(
        EVAL_SENSOR_NAME, target=AssetSelection.assets(*evals), default_status=DefaultSensorStatus.RUNNING,
        description="Evaluates an arm's checkpoint when it has a new materialization (the eval assets' automation "
                    "condition).")
