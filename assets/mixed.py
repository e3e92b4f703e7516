"""``mixed``: per-domain token shards, the validation split, and the phased training stream with its ledger."""

import base64

from dagster import MetadataValue

from curation.ledger_report import ledger_markdown, ledger_plot
from curation.mixture import build_mixture
from orchestration.resources import StageResult, StageRun
from orchestration.store import REPORT_DIR


def build(run: StageRun) -> StageResult:
    stats = build_mixture(run.cfg.mixture, run.upstream["filtered"] / "kept", run.upstream["tokenizer"],
                          run.cfg.validation_fraction, run.output)
    plot = f"{REPORT_DIR}/ledger.png"
    (run.output / REPORT_DIR).mkdir(exist_ok=True)
    # The plot inline, as in Dagster's tutorial: the UI shows it without serving files.
    image = base64.b64encode(ledger_plot(stats["ledger"], run.output / plot).read_bytes()).decode()
    metadata = {"tokens": stats["stream_tokens"], "ledger": MetadataValue.md(ledger_markdown(stats["ledger"])),
                "ledger_plot": MetadataValue.md(f"![ledger](data:image/png;base64,{image})")}
    return StageResult(stats, metadata, artifacts=["mixture.json", plot])
