"""``eval``: per-domain validation loss and bits-per-byte on the held-out shards, at every checkpoint.

evaluation.validation decides what the curve holds (from where training started, see there); this asset adds the
plot, the Dagster table and the log lines.
"""

import json

from dagster import MetadataValue

from evaluation.downstream import plot_loss_vs_accuracy
from evaluation.forgetting import (
    FORGETTING_FILE,
    Stage,
    TransferRow,
    ancestor_rows,
    as_curve,
    forgetting_markdown,
    trained_domains,
    transfer_markdown,
    write_forgetting,
)
from evaluation.forgetting_plots import plot_forgetting, plot_transfer
from evaluation.plots import plot_curves
from evaluation.validation import EVAL_FILE, StepEval, curve_checkpoints, evaluate_run, validation_splits
from orchestration.config import load_experiment
from orchestration.eval_cache import EvalCache, named_checkpoints
from orchestration.live_eval import describe_step, downstream_tasks, untrained_identity
from orchestration.resources import StageResult, StageRun, inline_plots
from orchestration.store import REPORT_DIR

TASKS_DIR = "downstream_tasks"  # the tasks built from the held-out documents (lm-eval configs and examples)


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
    cache = EvalCache(run.store.root, f"dagster run {run.context.run.run_id}", run.context.log.info)
    tasks = downstream_tasks(run.cfg, run.upstream["mixed"], run.upstream["tokenizer"], run.output / TASKS_DIR)
    evaluated = evaluate_run(checkpoints, run.cfg.model, vocab_size, validation_splits(run.upstream["mixed"]),
                             run.cfg.eval, run.cfg.train.seed, run.output, cache, log_step, tasks)
    run.context.log.info(
        f"eval: {len(checkpoints) - len(computed)} of {len(checkpoints)} checkpoints came from the evaluation cache "
        f"(live evaluation or an earlier eval); computed now: {', '.join(map(str, computed)) or 'none'}")
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
    result = StageResult(stats, {"per_domain": MetadataValue.md(table), "plot": inline_plots([run.output / plot]),
                                 **numbers}, artifacts=[EVAL_FILE, plot])
    if tasks is not None:
        add_downstream(run, evaluated, result)
    if "parent" in run.upstream:
        add_forgetting(run, curve, result)
    return result


def add_downstream(run: StageRun, evaluated: dict, result: StageResult) -> None:
    """Task accuracy at every checkpoint: a table of the last one, the plot against validation loss, and the
    whole curve in the eval's MLflow run."""
    by_step, curve = evaluated["downstream"], evaluated["by_step"]
    final = by_step[max(by_step)]  # (not in the stats, which are per domain: eval.json and MLflow hold the curve)
    rows = [f"| {t} | {r['n']} | {r['acc']:.3f} | {r['acc_stderr']:.3f} | {r['chance']:.3f} | "
            f"{(r['acc'] - r['chance']) / max(r['acc_stderr'], 1e-9):+.1f} |" for t, r in final.items()]
    result.metadata["downstream"] = MetadataValue.md(
        "| task | examples | accuracy | standard error | chance | (accuracy - chance) / SE |\n"
        "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    result.metadata.update({f"downstream/{t}/acc": r["acc"] for t, r in final.items()})
    mean_loss = {s: sum(d["loss"] for d in curve[s].values()) / len(curve[s]) for s in curve}
    plot = f"{REPORT_DIR}/loss_vs_accuracy.png"
    plot_loss_vs_accuracy({s: (mean_loss[s], by_step[s]) for s in by_step}, run.output / plot,
                          f"{run.cfg.name}: downstream accuracy against validation loss")
    result.metadata["downstream_plot"] = inline_plots([run.output / plot])
    result.artifacts.append(plot)
    for step, scores in by_step.items():
        metrics = {"val_loss/mean": mean_loss[step]}
        metrics.update({f"downstream/{t}/acc": r["acc"] for t, r in scores.items()})
        metrics.update({f"downstream/{t}/acc_stderr": r["acc_stderr"] for t, r in scores.items()})
        result.step_metrics[step] = metrics


def add_forgetting(run: StageRun, curve: dict, result: StageResult) -> None:
    """A child's forgetting on the parent's training domains (forgetting.json, a table and a plot), with its own
    row of the transfer matrix (a chain's matrix is its ancestors' rows, then this one)."""
    start = min(curve)  # the parent's checkpoint: 0, or the branch step (validation.curve_checkpoints)
    parent_domains = trained_domains(run.upstream["parent"], run.parent_step)
    table, rows = write_forgetting(run.output, run.cfg.name, curve, start, parent_domains,
                                   trained=trained_domains(run.upstream["checkpoint"], max(curve)),
                                   ancestors=parent_rows(run, parent_domains))
    plot, matrix = f"{REPORT_DIR}/forgetting.png", f"{REPORT_DIR}/transfer.png"
    plot_forgetting(table, run.output / plot, f"{run.cfg.name}: loss on the parent's domains")
    plot_transfer(rows, run.output / matrix, f"{run.cfg.name}: change of loss per stage of the chain")
    run.context.log.info("forgetting on the parent's domains: " + ", ".join(
        f"{d} {f.final_change:+.3f} (peak {f.max_rise:+.3f} at step {f.max_rise_step})"
        for d, f in table.domains.items()))
    result.metadata["forgetting"] = MetadataValue.md(forgetting_markdown(table))
    result.metadata["forgetting_plot"] = inline_plots([run.output / plot])
    result.metadata["transfer"] = MetadataValue.md(transfer_markdown(rows))
    result.metadata["transfer_plot"] = inline_plots([run.output / matrix])
    result.artifacts += [FORGETTING_FILE, plot, matrix]


def parent_rows(run: StageRun, parent_domains: list[str]) -> list[TransferRow]:
    """The transfer-matrix rows of the chain before this child, from the parent's own eval output."""
    parent_eval = run.upstream["parent_eval"]
    parent_curve = as_curve(json.loads((parent_eval / EVAL_FILE).read_text())["by_step"])
    saved = parent_eval / FORGETTING_FILE
    name = load_experiment(list(run.cfg.parent.experiment)).name
    stage = Stage(name, parent_curve, min(parent_curve), parent_domains, end_step=run.parent_step)
    return ancestor_rows(stage, json.loads(saved.read_text()) if saved.is_file() else None)
