"""``law_fit``: a law preset's fit over its arms (``orchestration.law_fits``), inline in Dagster."""

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue

from orchestration.config import default_lab_home
from orchestration.experiments import find_experiment
from orchestration.law_fits import materialize_law_fit
from orchestration.resources import inline_plots
from orchestration.store import flatten


def materialize(context: AssetExecutionContext, experiment_name: str) -> MaterializeResult:
    experiment = find_experiment(default_lab_home(), experiment_name)
    fit = materialize_law_fit(experiment, context.run.run_id, context.log.info)
    numbers = {f"law/{key}": value for key, value in flatten(fit.summary["fit"]).items()
               if isinstance(value, int | float) and not isinstance(value, bool)}
    metadata = {"path": fit.path, "law": MetadataValue.md(fit.markdown), "plots": inline_plots(fit.plots),
                "law_json": MetadataValue.json(fit.summary), **numbers}
    return MaterializeResult(data_version=DataVersion(fit.content_hash), metadata=metadata)
