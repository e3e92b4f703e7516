"""``report``: an experiment's arms compared (``evaluation.compare``), inline in Dagster and attached in MLflow."""

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue

from orchestration.config import default_lab_home
from orchestration.experiments import find_experiment
from orchestration.reports import materialize_report
from orchestration.resources import inline_plots


def materialize(context: AssetExecutionContext, experiment_name: str) -> MaterializeResult:
    experiment = find_experiment(default_lab_home(), experiment_name)
    report = materialize_report(experiment, context.run.run_id, context.log.info)
    metadata = {
        "arms": len(experiment.arms), "path": report.path, "mlflow_run": MetadataValue.url(report.mlflow_url),
        "table": MetadataValue.md(report.markdown), "plots": inline_plots(report.plots),
        # Numbers Dagster's plots tab charts across materializations.
        **{f"val_loss/{name}": value for name, value in report.val_loss.items()},
    }
    return MaterializeResult(data_version=DataVersion(report.content_hash), metadata=metadata)
