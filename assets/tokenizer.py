"""``tokenizer``: byte-level BPE trained on the training split of the filtered documents."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from curation.tokenizer import train_tokenizer
from orchestration.resources import LabResource, StageResult, StageRun


def build(run: StageRun) -> StageResult:
    cfg = run.cfg.tokenizer
    stats = train_tokenizer(cfg, run.upstream["filtered"] / "kept", run.cfg.validation_fraction, run.output)
    return StageResult(stats, {"vocab_size": stats["vocab_size"]})


@asset(deps=["filtered"], group_name="lineage", description="Byte-level BPE (tokenizer.json) for TorchTitan.")
def tokenizer(context: AssetExecutionContext, lab: LabResource) -> MaterializeResult:
    return lab.materialize(context, "tokenizer", build)
