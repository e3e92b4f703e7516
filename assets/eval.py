"""``eval``: per-domain validation loss and bits-per-byte of the final checkpoint on the held-out shards."""

import json

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from evaluation.perplexity import ValSplit, evaluate_checkpoint, find_last_checkpoint
from orchestration.resources import LabResource, StageResult, StageRun


def build(run: StageRun) -> StageResult:
    mixed = run.upstream["mixed"]
    domains = json.loads((mixed / "mixture.json").read_text())["domains"]
    splits = {
        name: ValSplit(str(mixed / "shards" / name / "val.bin"), split["val"]["bytes"])
        for name, split in domains.items() if "val" in split
    }
    vocab_size = run.upstream_manifests["checkpoint"].stats["vocab_size"]
    checkpoint_dir = find_last_checkpoint(run.upstream["checkpoint"])
    results = evaluate_checkpoint(checkpoint_dir, run.cfg.model, vocab_size, splits, run.cfg.eval)
    stats = {
        name: {"loss": r.loss, "bits_per_byte": r.bits_per_byte, "tokens": r.tokens} for name, r in results.items()
    }
    (run.output / "eval.json").write_text(json.dumps(stats, indent=2))
    table = "| domain | tokens | loss | bits/byte |\n|---|---:|---:|---:|\n" + "\n".join(
        f"| {name} | {r['tokens']:,} | {r['loss']:.4f} | {r['bits_per_byte']:.4f} |" for name, r in stats.items()
    )
    return StageResult(stats, {"per_domain": MetadataValue.md(table)}, artifacts=["eval.json"])


@asset(deps=["mixed", "checkpoint"], group_name="lineage",
       description="Per-domain validation loss and bits-per-byte of the final checkpoint.")
def eval(context: AssetExecutionContext, lab: LabResource) -> MaterializeResult:  # noqa: A001
    return lab.materialize(context, "eval", build)
