"""``mixed``: per-domain token shards, the validation split, and the phased training stream with its ledger."""

from dagster import MetadataValue

from curation.heldout import token_shortfalls
from curation.ledger_report import ledger_markdown, ledger_plot
from curation.mixture import build_mixture
from orchestration.resources import StageResult, StageRun, inline_plots
from orchestration.store import REPORT_DIR


def build(run: StageRun) -> StageResult:
    stats = build_mixture(run.cfg.mixture, run.upstream["filtered"], run.upstream["tokenizer"], run.output)
    # The held-out minimums were met on estimated tokens in `filtered`; here are the real ones. Stats and metadata
    # only (not mixture.json): the minimums decide no byte of this output.
    stats["held_out_warnings"] = token_shortfalls(stats["domains"], stats["trained_domains"], run.cfg.filter.heldout)
    for warning in stats["held_out_warnings"]:
        run.context.log.warning(warning)
    plot = f"{REPORT_DIR}/ledger.png"
    (run.output / REPORT_DIR).mkdir(exist_ok=True)
    # The plot inline, as in Dagster's tutorial: the UI shows it without serving files.
    ledger_plot(stats["ledger"], run.output / plot)
    held_out = {d: split.get("val", {"documents": 0, "tokens": 0}) for d, split in stats["domains"].items()}
    metadata = {"tokens": stats["stream_tokens"], "ledger": MetadataValue.md(ledger_markdown(stats["ledger"])),
                "ledger_plot": inline_plots([run.output / plot]),
                "held_out_by_domain": MetadataValue.json(held_out),
                "held_out_warnings": MetadataValue.json(stats["held_out_warnings"])}
    return StageResult(stats, metadata, artifacts=["mixture.json", plot])
