"""``eval``: per-domain validation loss and bits-per-byte on the held-out shards, at every checkpoint.

evaluation.validation decides what the curve holds (from where training started, see there); this asset adds the
plot, the Dagster table and the log lines.
"""

from dagster import MetadataValue

from evaluation.plots import plot_curves
from evaluation.validation import EVAL_FILE, StepEval, curve_checkpoints, evaluate_run, validation_splits
from orchestration.eval_cache import named_checkpoints
from orchestration.live_eval import arm_cache, describe_step, untrained_identity
from orchestration.resources import StageResult, StageRun, inline_plots
from orchestration.store import REPORT_DIR


def build(run: StageRun) -> StageResult:
    computed: list[int] = []

    def log_step(step: int, evaluated: StepEval) -> None:
        if evaluated.computed:
            computed.append(step)
        run.context.log.info(describe_step(step, evaluated))

    vocab_size = run.upstream_manifests["checkpoint"].stats["vocab_size"]
    checkpoints = named_checkpoints(
        curve_checkpoints(run.upstream["checkpoint"], run.upstream.get("parent"), run.parent_step,
                          run.cfg.parent.mode),
        untrained_identity(run.cfg, vocab_size))
    cache = arm_cache(run.store, run.cfg, f"dagster run {run.context.run.run_id}", run.context.log.info)
    evaluated = evaluate_run(checkpoints, run.cfg.model, vocab_size, validation_splits(run.upstream["mixed"]),
                             run.cfg.eval, run.cfg.train.seed, run.output, cache, log_step)
    run.context.log.info(
        f"eval: {len(checkpoints) - len(computed)} of {len(checkpoints)} checkpoints came from the evaluation cache "
        f"(live evaluation or an earlier eval); computed now: {', '.join(map(str, computed)) or 'none'}")
    stats, curve = evaluated["final"], evaluated["by_step"]
    (run.output / REPORT_DIR).mkdir(exist_ok=True)
    plot = f"{REPORT_DIR}/val_loss.png"
    plot_curves({d: [(s, curve[s][d]["loss"]) for s in curve] for d in stats}, run.output / plot,
                title=f"{run.cfg.name}: validation loss per domain", ylabel="loss (nats/token)")
    table = "| domain | tokens | initial loss | final loss | bits/byte |\n|---|---:|---:|---:|---:|\n" + "\n".join(
        f"| {d} | {r['tokens']:,} | {r['initial_loss']:.3f} | {r['loss']:.3f} | {r['bits_per_byte']:.3f} |"
        for d, r in stats.items()
    )
    # Numbers Dagster's plots tab charts over the asset's materializations.
    numbers = {f"bits_per_byte/{d}": r["bits_per_byte"] for d, r in stats.items()}
    numbers.update({f"loss/{d}": r["loss"] for d, r in stats.items()})
    return StageResult(stats, {"per_domain": MetadataValue.md(table), "plot": inline_plots([run.output / plot]),
                               **numbers}, artifacts=[EVAL_FILE, plot])
