"""Asset checks on the invariants a researcher trusts, one set per graph node of the stage they check.

    tokenizer   round-trips the held-out text                  blocking: a failure stops `mixed` and below
    filtered    accounts for every corpus document             blocking
    mixed       ledger shares within tolerance of the weights  warning only: small streams miss weights
                rehydration gave each training document a count blocking
    checkpoint  training loss finite (blocking) and fell (warning)

Each check reads the output of its asset's latest materialization (the ``path`` and ``stats`` its metadata
records) and asks a pure function in ``curation.invariants`` or ``training.invariants``; the numbers it returns
become the check's metadata. A blocking check that fails with ERROR severity stops the assets below it in the run.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from curation.invariants import (
    accounted_documents,
    every_document_accounted,
    heldout_texts,
    rehydration_accounted,
    round_trip,
    shares_within_tolerance,
)
from orchestration.graph import Graph, Node
from orchestration.lab import lab_for
from training.invariants import loss_finite_and_fell
from training.outputs import step_log


@dataclass
class Output:
    """An asset's latest materialized output: its folder and its stage stats."""

    path: Path
    stats: dict


def latest_output(context: AssetCheckExecutionContext, node: Node, key: list[str]) -> Output:
    """The output the latest materialization of ``key`` recorded (its path: store/<stage>/<fingerprint>), read from
    the lab's store (with an object store, from the local cache)."""
    event = context.instance.get_latest_materialization_event(AssetKey(key))
    if event is None or event.asset_materialization is None:
        raise RuntimeError(f"{'/'.join(key)} has no materialization to check: materialize it first")
    metadata = event.asset_materialization.metadata
    _, stage, fp = metadata["path"].value.split("/")
    return Output(lab_for(node.arm.overrides).store.path(stage, fp), metadata["stats"].value)


def result(passed: bool, numbers: dict, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> AssetCheckResult:
    """The check's result with its numbers as metadata: plain numbers where the UI can chart them, else JSON."""
    metadata = {k: v if isinstance(v, (int, float, str)) else MetadataValue.json(v) for k, v in numbers.items()}
    return AssetCheckResult(passed=passed, severity=severity, metadata=metadata)


def tokenizer_round_trips(context: AssetCheckExecutionContext, node: Node) -> AssetCheckResult:
    from tokenizers import Tokenizer

    # A node's deps follow its stage's upstream list: the tokenizer's only one is `filtered`.
    tokenizer, filtered = latest_output(context, node, node.path), latest_output(context, node, node.deps[0])
    tokens = Tokenizer.from_file(str(tokenizer.path / "tokenizer.json"))
    return result(*round_trip(tokens, heldout_texts(filtered.path)))


def filtered_accounts_for_every_document(context: AssetCheckExecutionContext, node: Node) -> AssetCheckResult:
    filtered, corpus = latest_output(context, node, node.path), latest_output(context, node, node.deps[0])  # corpus
    return result(*every_document_accounted(corpus.stats["documents"], accounted_documents(filtered.stats)))


def ledger_within_tolerance(context: AssetCheckExecutionContext, node: Node) -> AssetCheckResult:
    mixed = latest_output(context, node, node.path)
    tolerance = lab_for(node.arm.overrides).cfg.checks.mixture_share_tolerance
    return result(*shares_within_tolerance(mixed.stats["ledger"], tolerance), AssetCheckSeverity.WARN)


def rehydration_accounts_for_every_document(context: AssetCheckExecutionContext, node: Node) -> AssetCheckResult:
    return result(*rehydration_accounted(latest_output(context, node, node.path).stats))


def loss_finite_and_falling(context: AssetCheckExecutionContext, node: Node) -> AssetCheckResult:
    checkpoint = latest_output(context, node, node.path)
    finite, fell, numbers = loss_finite_and_fell({step: row["loss"] for step, row in step_log(checkpoint.path).items()})
    # A loss that did not fall is worth a look (lr=0 ablations do that); a NaN makes every eval meaningless.
    return result(finite and fell, numbers, AssetCheckSeverity.WARN if finite else AssetCheckSeverity.ERROR)


@dataclass(frozen=True)
class CheckSpec:
    name: str
    blocking: bool
    description: str
    evaluate: Callable[[AssetCheckExecutionContext, Node], AssetCheckResult]


CHECKS: dict[str, tuple[CheckSpec, ...]] = {
    "tokenizer": (CheckSpec("round_trips_heldout_text", True,
                           "decode(encode(text)) == text on every held-out document: the tokenizer changes no text.",
                           tokenizer_round_trips),),
    "filtered": (CheckSpec("accounts_for_every_document", True,
                          "Every corpus document is kept, rejected (by a named rule) or held out: none lost.",
                          filtered_accounts_for_every_document),),
    "mixed": (CheckSpec("ledger_within_tolerance", False,
                       "Each domain's realized share of its phase is within checks.mixture_share_tolerance of its "
                       "weight (warning).", ledger_within_tolerance),
              CheckSpec("rehydration_accounts_for_every_document", True,
                        "With mixture.rehydration: every training document got one repeat count, and the repeats "
                        "add up to the documents the stream cycles through (stats.rehydration).",
                        rehydration_accounts_for_every_document)),
    "checkpoint": (CheckSpec("loss_finite_and_fell", True,
                            "The training loss is finite at every logged step (ERROR, blocks eval) and the final "
                            "loss is below the first (warning).", loss_finite_and_falling),),
}


def node_check(node: Node, spec: CheckSpec) -> AssetChecksDefinition:
    @asset_check(asset=AssetKey(node.path), name=spec.name, blocking=spec.blocking, description=spec.description)
    def _check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        return spec.evaluate(context, node)

    return _check


def asset_checks(graph: Graph) -> list[AssetChecksDefinition]:
    """The checks of every graph node of a checked stage."""
    return [node_check(node, spec) for node in graph.nodes.values() for spec in CHECKS.get(node.stage, ())]
