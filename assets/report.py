"""``report``: an experiment's arms compared (``evaluation.compare``), inline in Dagster and attached in MLflow."""

import base64

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue

from orchestration.config import default_lab_home
from orchestration.experiments import find_experiment
from orchestration.reports import materialize_report


def materialize(context: AssetExecutionContext, experiment_name: str) -> MaterializeResult:
    experiment = find_experiment(default_lab_home(), experiment_name)
    report = materialize_report(experiment, context.run.run_id, context.log.info)
    plots = "\n\n".join(f"![{path.name}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"
                        for path in report.plots)
    metadata = {
        "arms": len(experiment.arms), "path": report.path, "mlflow_run": MetadataValue.url(report.mlflow_url),
        "table": MetadataValue.md(report.markdown), "plots": MetadataValue.md(plots),
        # Numbers Dagster's plots tab charts across materializations.
        **{f"val_loss/{name}": value for name, value in report.val_loss.items()},
    }
    return MaterializeResult(data_version=DataVersion(report.content_hash), metadata=metadata)
