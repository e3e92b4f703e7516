"""Forgetting of a child experiment and transfer across a sequence of experiments, from eval curves.

A child's eval curve (evaluation.validation) starts at the parent's checkpoint, so it already holds what is
needed: the loss on every domain with held-out data at the start (the parent's loss) and at each of the child's
checkpoints. On the domains the parent trained on, a rise above the parent's loss is forgetting; an early rise
that falls back is the stability gap. A transfer matrix puts stages of a sequence (pretraining, then continual
pretraining, ...) in rows and domains in columns: each entry is how much that stage changed the loss on that
domain (end minus start), so learning shows as negative numbers on the stage's own domains, forgetting as positive
ones elsewhere.

Everything here is plain numbers in, JSON-able dataclasses and markdown out (no timestamps): the same curves give
the same bytes. The figures are in evaluation.forgetting_plots.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from training.outputs import LEDGER_FILE

FORGETTING_FILE = "forgetting.json"

# step -> domain -> {"loss", "bits_per_byte", "tokens"}: eval.json's "by_step" (its steps are strings once read back)
Curve = dict[int, dict[str, dict[str, float]]]


def as_curve(by_step: dict) -> Curve:
    """An eval curve with integer steps, in step order, from eval.json's ``by_step`` as written or as read."""
    return {int(step): by_step[step] for step in sorted(by_step, key=int)}


def trained_domains(checkpoint_output: Path, step: int) -> list[str]:
    """The domains a training output had trained on by ``step`` (tokens > 0 in any phase or in replay), from its
    checkpoint_ledger.json."""
    ledgers = json.loads(Path(checkpoint_output, LEDGER_FILE).read_text())
    if str(step) not in ledgers:
        raise ValueError(f"{LEDGER_FILE} of {checkpoint_output} has no step {step} (it has {', '.join(ledgers)}): "
                         "rebuild that checkpoint output so that its ledger covers every checkpoint")
    ledger = ledgers[str(step)]
    counts = [*ledger["phases"].values(), ledger["replay"]]
    return sorted({domain for per_domain in counts for domain, tokens in per_domain.items() if tokens > 0})


@dataclass
class DomainForgetting:
    """One parent domain over the child's run. Changes are child loss minus the parent's (positive: forgot)."""

    start_loss: float  # the parent's loss: the curve at the start step
    loss_by_step: dict[int, float]  # the child's checkpoints after the start
    max_rise: float  # the stability gap's peak: the highest loss above the start (<= 0: it never rose)
    max_rise_step: int
    final_change: float  # the last checkpoint's loss minus the start's
    recovered: bool | None  # rose, then ended back at or below the parent's loss; None: it never rose
    recovered_fraction: float | None  # share of the peak rise undone by the end; None: it never rose


@dataclass
class ForgettingTable:
    start_step: int  # the parent's checkpoint in the child's step count: 0, or the branch step
    steps: list[int]  # the child's checkpoints after the start
    domains: dict[str, DomainForgetting]  # every parent domain with held-out data
    without_heldout: list[str]  # parent domains the curve has no loss for (no held-out documents): not measured


def domain_forgetting(start_loss: float, loss_by_step: dict[int, float]) -> DomainForgetting:
    peak_step = max(loss_by_step, key=lambda step: (loss_by_step[step], -step))  # the first step of the peak
    rise = loss_by_step[peak_step] - start_loss
    final = loss_by_step[max(loss_by_step)] - start_loss
    rose = rise > 0
    return DomainForgetting(
        start_loss=start_loss, loss_by_step=loss_by_step, max_rise=rise, max_rise_step=peak_step,
        final_change=final, recovered=final <= 0 if rose else None,
        recovered_fraction=(rise - final) / rise if rose else None,
    )


def forgetting_table(curve: Curve, start_step: int, parent_domains: list[str]) -> ForgettingTable:
    """Loss on each of the parent's domains at the start (the parent's) and at every later checkpoint of the curve."""
    curve = as_curve(curve)
    if start_step not in curve:
        raise ValueError(f"the eval curve has no point at the start step {start_step} (it has {list(curve)}): "
                         "evaluate the child with the parent's checkpoint (evaluation.validation.curve_checkpoints)")
    steps = [step for step in curve if step > start_step]
    if not steps:
        raise ValueError(f"the eval curve has no checkpoint after the start step {start_step}")
    measured = [d for d in sorted(parent_domains) if all(d in curve[step] for step in [start_step, *steps])]
    domains = {
        d: domain_forgetting(curve[start_step][d]["loss"], {step: curve[step][d]["loss"] for step in steps})
        for d in measured
    }
    return ForgettingTable(start_step, steps, domains, sorted(set(parent_domains) - set(measured)))


def forgetting_markdown(table: ForgettingTable) -> str:
    """A summary per parent domain, then the loss at every step (the start row is the parent's)."""
    summary = ["| parent domain | parent loss | peak rise (step) | final loss | final change | recovered |",
               "|---|---:|---:|---:|---:|---|"]
    for d, f in table.domains.items():
        if f.recovered is None:
            recovered = "never rose"
        else:
            recovered = "yes" if f.recovered else f"no ({f.recovered_fraction:.0%} of the peak)"
        summary.append(f"| {d} | {f.start_loss:.3f} | {f.max_rise:+.3f} ({f.max_rise_step}) | "
                       f"{f.loss_by_step[table.steps[-1]]:.3f} | {f.final_change:+.3f} | {recovered} |")
    names = list(table.domains)
    by_step = [f"| step | {' | '.join(names)} |", "|---:|" + "---:|" * len(names),
               f"| {table.start_step} (parent) | " + " | ".join(f"{table.domains[d].start_loss:.3f}" for d in names)
               + " |"]
    by_step += [f"| {step} | " + " | ".join(f"{table.domains[d].loss_by_step[step]:.3f}" for d in names) + " |"
                for step in table.steps]
    parts = ["\n".join(summary), "\n".join(by_step)]
    if table.without_heldout:
        parts.append(f"Not measured (no held-out data): {', '.join(table.without_heldout)}.")
    return "\n\n".join(parts)


@dataclass
class Stage:
    """One experiment of a sequence: its eval curve, where its own segment starts, and what it trained on."""

    name: str
    curve: Curve
    start_step: int
    trained: list[str]
    end_step: int | None = None  # None: the curve's last step; a parent a child branched from mid-run ends there


@dataclass
class TransferRow:
    stage: str
    trained: list[str]
    change: dict[str, float]  # domain -> loss at the stage's last checkpoint minus at its start


def transfer_row(stage: Stage) -> TransferRow:
    curve = as_curve(stage.curve)
    end_step = max(curve) if stage.end_step is None else stage.end_step
    for step in (stage.start_step, end_step):
        if step not in curve:
            raise ValueError(f"stage {stage.name}: the eval curve has no point at step {step} (it has {list(curve)})")
    start, end = curve[stage.start_step], curve[end_step]
    change = {d: end[d]["loss"] - start[d]["loss"] for d in sorted(start) if d in end}
    return TransferRow(stage.name, sorted(stage.trained), change)


def transfer_matrix(stages: list[Stage]) -> list[TransferRow]:
    """Rows in the order of the sequence; a chain's matrix is its parent's rows followed by its own."""
    return [transfer_row(stage) for stage in stages]


def matrix_domains(rows: list[TransferRow]) -> list[str]:
    return sorted({d for row in rows for d in row.change})


def transfer_markdown(rows: list[TransferRow]) -> str:
    """Rows = stages, columns = domains; a stage's own training domains in bold; `–`: no held-out loss."""
    domains = matrix_domains(rows)
    lines = [f"| stage | {' | '.join(domains)} |", "|---|" + "---:|" * len(domains)]
    for row in rows:
        cells = []
        for d in domains:
            cell = f"{row.change[d]:+.3f}" if d in row.change else "–"
            cells.append(f"**{cell}**" if d in row.trained and d in row.change else cell)
        lines.append(f"| {row.stage} | {' | '.join(cells)} |")
    return "\n".join(lines)


def write_forgetting(out_dir: Path, name: str, curve: Curve, start_step: int, parent_domains: list[str],
                     trained: list[str], ancestors: list[TransferRow]) -> tuple[ForgettingTable, list[TransferRow]]:
    """Write ``out_dir/forgetting.json``: the child's forgetting table on the parent's domains and the transfer
    matrix of its chain (``transfer``: the ancestors' rows, up to where this child starts, then its own row)."""
    table = forgetting_table(curve, start_step, parent_domains)
    rows = [*ancestors, *transfer_matrix([Stage(name, curve, start_step, trained)])]
    document = {"parent_domains": sorted(parent_domains), "forgetting": asdict(table),
                "transfer": [asdict(row) for row in rows]}
    Path(out_dir, FORGETTING_FILE).write_text(json.dumps(document, indent=2))
    return table, rows


def ancestor_rows(parent: Stage, parent_forgetting: dict | None) -> list[TransferRow]:
    """The transfer matrix before a child: the rows of the parent's own ancestors (from the parent's
    forgetting.json, when the parent is a child itself), then the parent's row up to the step the child starts
    from (``parent.end_step``)."""
    earlier = [TransferRow(**row) for row in parent_forgetting["transfer"][:-1]] if parent_forgetting else []
    return [*earlier, transfer_row(parent)]
