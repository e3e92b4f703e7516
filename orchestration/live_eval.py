"""Live evaluation: every checkpoint evaluated soon after it is saved, in its own run, while training goes on.

Three parts, each small:

1. ``report_checkpoints`` runs beside a training job (the ``checkpoint`` asset) and reports each complete
   checkpoint of the curve as an ``AssetObservation`` of the checkpoint asset, as it lands (the curve's start,
   the untrained model or the parent's checkpoint, first), naming the arm whose training it is. A resumed run
   reports its earlier checkpoints again; the sensor's run keys make that harmless.
2. ``live_evaluation_sensor`` reads those observations in storage order after a cursor kept per checkpoint asset
   and asks for one ``live_evaluation`` run per checkpoint, with the run key ``<fingerprint>@step-N``. Dagster
   launches at most one run per run key and writes the cursor only after the tick's runs are launched, so no
   checkpoint is skipped between ticks or evaluated twice after a daemon restart.
3. The ``live_evaluation`` job evaluates the one checkpoint through the evaluation cache
   (``orchestration.eval_cache``), logs the validation losses to the training's MLflow run at that step (its
   charts fill in while training runs) and observes the checkpoint asset with the numbers (its plots in Dagster).
   The arm's ``eval`` asset then finds those results in the cache and computes none of them again.
"""

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    Config,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    SensorEvaluationContext,
    in_process_executor,
    job,
    op,
    sensor,
)

from curation.tokenizer import load_tokenizer
from evaluation.downstream_tasks import build_tasks, held_out_texts
from evaluation.validation import (
    Checkpoint,
    StepEval,
    Tasks,
    curve_checkpoints,
    evaluate_step,
    split_digest,
    validation_splits,
)
from orchestration.config import ExperimentConfig
from orchestration.eval_cache import EvalCache, checkpoint_key
from orchestration.lab import lab_for
from orchestration.lineage import PlanItem
from orchestration.polling import polling
from orchestration.store import Store

POLL_S = 2.0  # how often a training job's folder is looked at for new checkpoints
SENSOR_INTERVAL_S = 5
EVAL_POOL = "evaluation"  # one checkpoint evaluation at a time on the host (dagster.yaml's pool limit)


def untrained_identity(cfg: ExperimentConfig, vocab_size: int) -> dict:
    """What decides the untrained model's weights, the curve's start without a parent."""
    return {"model": asdict(cfg.model), "vocab_size": vocab_size, "seed": cfg.train.seed}


def downstream_tasks(cfg: ExperimentConfig, mixed_dir: Path, tokenizer_dir: Path, folder: Path) -> Tasks | None:
    """The arm's downstream tasks built into ``folder`` from its held-out documents; None unless enabled."""
    if not cfg.eval.downstream.enabled:
        return None
    tokenizer = load_tokenizer(tokenizer_dir)
    build_tasks(held_out_texts(mixed_dir, tokenizer), tokenizer, folder, cfg.eval.downstream)
    return Tasks(folder, tokenizer_dir, cfg.eval.downstream)


@contextmanager
def report_checkpoints(context, curve: Callable[[], dict[int, Path | None]], metadata: dict) -> Iterator[None]:
    """While the block runs, report each new checkpoint of ``curve()`` as an observation of the asset being built.

    Observations are written to the instance at once (not at the end of the step, as ``context.log_event`` would),
    from a thread that looks every ``POLL_S`` seconds, and once more when the block ends.
    """
    reported: set[int] = set()

    def report_new() -> None:
        for step in sorted(set(curve()) - reported):
            context.instance.report_runless_asset_event(AssetObservation(
                asset_key=context.asset_key, description=f"checkpoint at step {step} saved",
                metadata={"checkpoint_step": step, **metadata}))
            reported.add(step)

    with polling(report_new, POLL_S, "checkpoint-reporter"):
        yield
    report_new()


class LiveEvalConfig(Config):
    experiment: str
    arm: str
    overrides: list[str]
    fingerprint: str  # the training output's
    step: int
    asset: list[str]  # the checkpoint asset's key, observed with the results
    mlflow_run_id: str = ""  # the training's run: the validation curve is logged beside the training loss


@op(pool=EVAL_POOL)
def evaluate_saved_checkpoint(context: OpExecutionContext, config: LiveEvalConfig) -> None:
    lab = lab_for(config.overrides)
    item = lab.item("checkpoint")
    if item.upstream is None:
        raise RuntimeError(f"{config.experiment}/{config.arm}: the checkpoint's inputs are gone ({item.reason})")
    vocab_size = item.upstream["tokenizer"].stats["vocab_size"]
    mixed_dir = lab.store.path("mixed", item.upstream["mixed"].fingerprint)
    tokenizer_dir = lab.store.path("tokenizer", item.upstream["tokenizer"].fingerprint)
    splits = validation_splits(mixed_dir)
    cache = EvalCache(lab.store.root, f"dagster run {context.run.run_id}", context.log.info)
    evaluated = None
    with tempfile.TemporaryDirectory() as scratch:
        tasks = downstream_tasks(lab.cfg, mixed_dir, tokenizer_dir, Path(scratch))
        for _attempt in range(2):  # the training may commit (rename) its folder while this run reads it
            checkpoint = locate_checkpoint(lab.store, lab.cfg, item, config.fingerprint, config.step, vocab_size)
            try:
                evaluated = evaluate_step(checkpoint, lab.cfg.model, vocab_size, splits,
                                          {d: split_digest(s) for d, s in splits.items()}, lab.cfg.eval,
                                          lab.cfg.train.seed, cache, tasks)
                break
            except FileNotFoundError:
                context.log.info(f"{checkpoint.path} moved while it was read; looking for it again")
    if evaluated is None:
        raise FileNotFoundError(f"checkpoint step {config.step} of {config.fingerprint} moved twice while read")
    context.log.info(describe_step(config.step, evaluated))
    if config.mlflow_run_id:
        lab.tracker.log_metrics(config.mlflow_run_id, {f"val_{k}": v for k, v in step_numbers(evaluated).items()},
                                config.step)
    numbers = step_numbers(evaluated)
    context.log_event(AssetObservation(
        asset_key=AssetKey(config.asset), description=f"validation at step {config.step} (live)",
        metadata={"step": config.step, "checkpoint": checkpoint.name, "computed": ", ".join(evaluated.computed),
                  **numbers}))


def locate_checkpoint(store: Store, cfg: ExperimentConfig, item: PlanItem, fingerprint: str, step: int,
                      vocab_size: int) -> Checkpoint:
    """The curve's checkpoint at ``step`` of the training output ``fingerprint``, committed or still training."""
    output = store.path("checkpoint", fingerprint)
    if not output.is_dir():
        output = store.partial_path("checkpoint", fingerprint)
    parent = item.upstream.get("parent")
    parent_dir = store.path("checkpoint", parent.fingerprint) if parent else None
    parent_step = (item.config or {}).get("parent", {}).get("step")
    curve = curve_checkpoints(output, parent_dir, parent_step, cfg.parent.mode)
    if step not in curve:
        raise FileNotFoundError(f"no complete checkpoint at step {step} under {output}")
    return Checkpoint(curve[step], checkpoint_key(curve[step], untrained_identity(cfg, vocab_size)))


def step_numbers(evaluated: StepEval) -> dict[str, float]:
    """One checkpoint's numbers, named for charts: loss and bits-per-byte per domain, accuracy per task."""
    numbers = {f"loss/{d}": r["loss"] for d, r in evaluated.results.items()}
    numbers.update({f"bits_per_byte/{d}": r["bits_per_byte"] for d, r in evaluated.results.items()})
    for task, score in evaluated.tasks.items():
        numbers.update({f"downstream/{task}/acc": score["acc"], f"downstream/{task}/acc_stderr": score["acc_stderr"]})
    return numbers


def describe_step(step: int, evaluated: StepEval) -> str:
    losses = ", ".join([f"{d} {r['loss']:.3f}" for d, r in evaluated.results.items()]
                       + [f"{t} acc {r['acc']:.3f}" for t, r in evaluated.tasks.items()])
    if not evaluated.computed:
        return f"eval step {step}: reused from the evaluation cache ({losses})"
    return f"eval step {step}: computed {', '.join(evaluated.computed)} ({losses})"


# In the run's own process: a step subprocess would import torch and the definitions a second time.
@job(executor_def=in_process_executor,
     description="Evaluate one saved checkpoint on every held-out domain (launched by the live_evaluation sensor).")
def live_evaluation():
    evaluate_saved_checkpoint()


def checkpoint_assets(instance) -> list[AssetKey]:
    """Every ``checkpoint`` asset the instance knows, also one of an experiment recorded after the definitions
    were loaded: each report names its arm itself."""
    return [key for key in instance.get_asset_keys() if key.path[-1] == "checkpoint"]


def checkpoint_requests(instance, cursor: dict[str, int]) -> Iterator[RunRequest]:
    """A run request for each checkpoint reported after ``cursor`` (storage ids per checkpoint asset), in order;
    ``cursor`` is advanced as they are read."""
    for key in checkpoint_assets(instance):
        name = key.to_user_string()
        records = instance.fetch_observations(AssetRecordsFilter(asset_key=key, after_storage_id=cursor.get(name)),
                                              limit=1000, ascending=True).records
        for record in records:
            cursor[name] = record.storage_id
            reported = {k: v.value for k, v in record.asset_observation.metadata.items()}
            if "checkpoint_step" not in reported:
                continue  # the live results themselves, observed on the same asset
            config = LiveEvalConfig(
                experiment=reported["experiment"], arm=reported["arm"], overrides=json.loads(reported["overrides"]),
                fingerprint=reported["fingerprint"], step=reported["checkpoint_step"], asset=list(key.path),
                mlflow_run_id=reported["mlflow_run_id"])
            yield RunRequest(
                run_key=f"{config.fingerprint}@step-{config.step}",
                run_config={"ops": {"evaluate_saved_checkpoint": {"config": config.model_dump()}}},
                tags={"lab/experiment": config.experiment, "lab/arm": config.arm,
                      "lab/checkpoint_step": str(config.step)})


def history(instance) -> dict[str, int]:
    """A cursor past every report so far: where a sensor switched on for the first time starts."""
    cursor = {}
    for key in checkpoint_assets(instance):
        latest = instance.fetch_observations(key, limit=1).records
        if latest:
            cursor[key.to_user_string()] = latest[0].storage_id
    return cursor


@sensor(job=live_evaluation, minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=DefaultSensorStatus.RUNNING,
        description="Evaluates every checkpoint a training run saves, once, while it trains.")
def live_evaluation_sensor(context: SensorEvaluationContext) -> Iterator[RunRequest]:
    if context.cursor is None:
        # First tick on this instance (`make ui` on a lab home with history): checkpoints reported before were
        # evaluated by their arms' eval assets; evaluating them all again would only queue work.
        context.update_cursor(json.dumps(history(context.instance), sort_keys=True))
        return
    cursor: dict[str, int] = json.loads(context.cursor)
    yield from checkpoint_requests(context.instance, cursor)
    context.update_cursor(json.dumps(cursor, sort_keys=True))
