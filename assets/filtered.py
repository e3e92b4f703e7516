"""``filtered``: per-domain quality rules and dedup on datatrove; kept and rejected sets side by side."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from curation.filters import build_filtered
from orchestration.resources import LabResource, StageResult, StageRun


def build(run: StageRun) -> StageResult:
    stats = build_filtered(run.cfg.filter, run.upstream["corpus"], run.output)
    removed = "| rule | removed |\n|---|---:|\n" + "\n".join(
        f"| {rule} | {count} |" for rule, count in sorted(stats["removed_by_rule"].items(), key=lambda x: -x[1])
    )
    return StageResult(stats, {"documents": stats["kept"], "removed_by_rule": MetadataValue.md(removed),
                               "kept_by_domain": MetadataValue.json(stats["kept_by_domain"])})


@asset(deps=["corpus"], group_name="lineage",
       description="Quality filters per domain, exact and MinHash near dedup; the reject set kept as data.")
def filtered(context: AssetExecutionContext, lab: LabResource) -> MaterializeResult:
    return lab.materialize(context, "filtered", build)
