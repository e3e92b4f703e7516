"""``mixed``: per-domain token shards, the validation split, and the phased training stream with its ledger."""

from dagster import MetadataValue

from curation.ledger_report import ledger_markdown, ledger_plot
from curation.mixture import build_mixture
from orchestration.resources import StageResult, StageRun, inline_plots
from orchestration.store import REPORT_DIR


def build(run: StageRun) -> StageResult:
    stats = build_mixture(run.cfg.mixture, run.upstream["filtered"] / "kept", run.upstream["tokenizer"],
                          run.cfg.validation_fraction, run.output)
    plot = f"{REPORT_DIR}/ledger.png"
    (run.output / REPORT_DIR).mkdir(exist_ok=True)
    # The plot inline, as in Dagster's tutorial: the UI shows it without serving files.
    ledger_plot(stats["ledger"], run.output / plot)
    metadata = {"tokens": stats["stream_tokens"], "ledger": MetadataValue.md(ledger_markdown(stats["ledger"])),
                "ledger_plot": inline_plots([run.output / plot])}
    return StageResult(stats, metadata, artifacts=["mixture.json", plot])
