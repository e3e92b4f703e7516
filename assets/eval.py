"""``eval``: per-domain validation loss and bits-per-byte on the held-out shards, at every checkpoint.

The curve starts where training started: the untrained model (the training seed's initialization) at step 0, or,
for continual pretraining, the parent's checkpoint (at step 0, or at the branch step for a WSD branch), so that
the early rise and recovery (the stability gap) and the forgetting on the parent's domains are visible.
"""

import json

from dagster import MetadataValue

from evaluation.perplexity import ValSplit, evaluate_checkpoint, list_checkpoints
from evaluation.plots import plot_curves
from orchestration.resources import StageResult, StageRun


def build(run: StageRun) -> StageResult:
    mixed = run.upstream["mixed"]
    domains = json.loads((mixed / "mixture.json").read_text())["domains"]
    splits = {
        name: ValSplit(str(mixed / "shards" / name / "val.bin"), split["val"]["bytes"])
        for name, split in domains.items() if "val" in split
    }
    vocab_size = run.upstream_manifests["checkpoint"].stats["vocab_size"]
    trained = list_checkpoints(run.upstream["checkpoint"])
    if "parent" in run.upstream:  # a branch keeps the parent's step count; continual pretraining restarts at 0
        start = run.parent_step if run.cfg.parent.mode == "branch" else 0
        checkpoints = {start: list_checkpoints(run.upstream["parent"])[run.parent_step], **trained}
    else:
        checkpoints = {0: None, **trained}
    curve = {}
    for step, checkpoint in checkpoints.items():
        results = evaluate_checkpoint(checkpoint, run.cfg.model, vocab_size, splits, run.cfg.eval, run.cfg.train.seed)
        curve[step] = {name: {"loss": r.loss, "bits_per_byte": r.bits_per_byte, "tokens": r.tokens}
                       for name, r in results.items()}
        run.context.log.info(f"eval step {step}: " + ", ".join(f"{d} {r.loss:.3f}" for d, r in results.items()))
    final, initial = curve[max(curve)], curve[min(curve)]
    stats = {name: {**final[name], "initial_loss": initial[name]["loss"]} for name in final}
    (run.output / "eval.json").write_text(json.dumps({"final": stats, "by_step": curve}, indent=2))
    plot_curves({d: [(s, curve[s][d]["loss"]) for s in curve] for d in final}, run.output / "val_loss.png",
                       title=f"{run.cfg.name}: validation loss per domain", ylabel="loss (nats/token)")
    table = "| domain | tokens | initial loss | final loss | bits/byte |\n|---|---:|---:|---:|---:|\n" + "\n".join(
        f"| {d} | {r['tokens']:,} | {r['initial_loss']:.3f} | {r['loss']:.3f} | {r['bits_per_byte']:.3f} |"
        for d, r in stats.items()
    )
    # Numbers Dagster's plots tab charts over the asset's materializations.
    numbers = {f"bits_per_byte/{d}": r["bits_per_byte"] for d, r in stats.items()}
    numbers.update({f"loss/{d}": r["loss"] for d, r in stats.items()})
    return StageResult(stats, {"per_domain": MetadataValue.md(table), **numbers},
                       artifacts=["eval.json", "val_loss.png"])
