"""``mixed``: per-domain token shards, the validation split, and the training stream mixed by weight."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from curation.mixture import build_mixture
from orchestration.resources import LabResource, StageResult, StageRun


def build(run: StageRun) -> StageResult:
    stats = build_mixture(run.cfg.mixture, run.upstream["filtered"] / "kept", run.upstream["tokenizer"],
                          run.cfg.validation_fraction, run.output)
    ledger = "| domain | weight | target tokens | realized tokens | epochs |\n|---|---:|---:|---:|---:|\n" + "\n".join(
        f"| {d} | {row['weight']:.3f} | {row['target_tokens']:,} | {row['realized_tokens']:,} | {row['epochs']:.2f} |"
        for d, row in stats["ledger"].items()
    )
    return StageResult(stats, {"tokens": stats["stream_tokens"], "ledger": MetadataValue.md(ledger)},
                       artifacts=["mixture.json"])


@asset(deps=["filtered", "tokenizer"], group_name="lineage",
       description="Token shards per domain and split; the training stream mixed by weight, with its ledger.")
def mixed(context: AssetExecutionContext, lab: LabResource) -> MaterializeResult:
    return lab.materialize(context, "mixed", build)
