"""``eval``: per-domain validation loss and bits-per-byte on the held-out shards, at every checkpoint.

evaluation.validation decides what the curve holds (from where training started, see there); this asset adds the
plot, the Dagster table and the log lines.
"""

from dagster import MetadataValue

from evaluation.perplexity import DomainResult
from evaluation.plots import plot_curves
from evaluation.validation import EVAL_FILE, curve_checkpoints, evaluate_run, validation_splits
from orchestration.resources import StageResult, StageRun, inline_plots
from orchestration.store import REPORT_DIR


def build(run: StageRun) -> StageResult:
    def log_step(step: int, results: dict[str, DomainResult]) -> None:
        run.context.log.info(f"eval step {step}: " + ", ".join(f"{d} {r.loss:.3f}" for d, r in results.items()))

    checkpoints = curve_checkpoints(run.upstream["checkpoint"], run.upstream.get("parent"), run.parent_step,
                                    run.cfg.parent.mode)
    vocab_size = run.upstream_manifests["checkpoint"].stats["vocab_size"]
    evaluated = evaluate_run(checkpoints, run.cfg.model, vocab_size, validation_splits(run.upstream["mixed"]),
                             run.cfg.eval, run.cfg.train.seed, run.output, log_step)
    stats, curve = evaluated["final"], evaluated["by_step"]
    (run.output / REPORT_DIR).mkdir(exist_ok=True)
    plot = f"{REPORT_DIR}/val_loss.png"
    plot_curves({d: [(s, curve[s][d]["loss"]) for s in curve] for d in stats}, run.output / plot,
                title=f"{run.cfg.name}: validation loss per domain", ylabel="loss (nats/token)")
    table = ("| domain | held-out documents | tokens | initial loss | final loss | loss: 95% bootstrap interval over "
             "held-out documents | bits/byte | bits/byte: 95% bootstrap interval over held-out documents |\n"
             "|---|---:|---:|---:|---:|---:|---:|---:|\n") + "\n".join(
        f"| {d} | {r['documents']} | {r['tokens']:,} | {r['initial_loss']:.3f} | {r['loss']:.3f} | "
        f"{r['loss_ci95'][0]:.3f} to {r['loss_ci95'][1]:.3f} | {r['bits_per_byte']:.3f} | "
        f"{r['bits_per_byte_ci95'][0]:.3f} to {r['bits_per_byte_ci95'][1]:.3f} |"
        for d, r in stats.items()
    )
    # Numbers Dagster's plots tab charts over the asset's materializations.
    numbers = {f"bits_per_byte/{d}": r["bits_per_byte"] for d, r in stats.items()}
    numbers.update({f"loss/{d}": r["loss"] for d, r in stats.items()})
    return StageResult(stats, {"per_domain": MetadataValue.md(table), "plot": inline_plots([run.output / plot]),
                               **numbers}, artifacts=[EVAL_FILE, plot])
