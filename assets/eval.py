"""``eval``: per-domain validation loss and bits-per-byte on the held-out shards, at every checkpoint.

Step 0 is the untrained model (the training seed's initialization): the starting value the curve falls from.
"""

import json

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from evaluation.perplexity import ValSplit, evaluate_checkpoint, list_checkpoints
from evaluation.plots import plot_curves
from orchestration.resources import LabResource, StageResult, StageRun


def build(run: StageRun) -> StageResult:
    mixed = run.upstream["mixed"]
    domains = json.loads((mixed / "mixture.json").read_text())["domains"]
    splits = {
        name: ValSplit(str(mixed / "shards" / name / "val.bin"), split["val"]["bytes"])
        for name, split in domains.items() if "val" in split
    }
    vocab_size = run.upstream_manifests["checkpoint"].stats["vocab_size"]
    checkpoints = {0: None, **list_checkpoints(run.upstream["checkpoint"])}
    curve = {}
    for step, checkpoint in checkpoints.items():
        results = evaluate_checkpoint(checkpoint, run.cfg.model, vocab_size, splits, run.cfg.eval, run.cfg.train.seed)
        curve[step] = {name: {"loss": r.loss, "bits_per_byte": r.bits_per_byte, "tokens": r.tokens}
                       for name, r in results.items()}
        run.context.log.info(f"eval step {step}: " + ", ".join(f"{d} {r.loss:.3f}" for d, r in results.items()))
    final, initial = curve[max(curve)], curve[0]
    stats = {name: {**final[name], "initial_loss": initial[name]["loss"]} for name in final}
    (run.output / "eval.json").write_text(json.dumps({"final": stats, "by_step": curve}, indent=2))
    plot_curves({d: [(s, curve[s][d]["loss"]) for s in curve] for d in final}, run.output / "val_loss.png",
                       title=f"{run.cfg.name}: validation loss per domain", ylabel="loss (nats/token)")
    table = "| domain | tokens | initial loss | final loss | bits/byte |\n|---|---:|---:|---:|---:|\n" + "\n".join(
        f"| {d} | {r['tokens']:,} | {r['initial_loss']:.3f} | {r['loss']:.3f} | {r['bits_per_byte']:.3f} |"
        for d, r in stats.items()
    )
    return StageResult(stats, {"per_domain": MetadataValue.md(table)}, artifacts=["eval.json", "val_loss.png"])


@asset(deps=["mixed", "checkpoint"], group_name="lineage",
       description="Per-domain validation loss and bits-per-byte, from the untrained start to the final checkpoint.")
def eval(context: AssetExecutionContext, lab: LabResource) -> MaterializeResult:  # noqa: A001
    return lab.materialize(context, "eval", build)
