"""``mixed``: per-domain token shards, the validation split, and the phased training stream with its ledger."""

import base64

from dagster import MetadataValue

from curation.ledger import ledger_markdown
from curation.mixture import build_mixture
from orchestration.resources import StageResult, StageRun


def build(run: StageRun) -> StageResult:
    stats = build_mixture(run.cfg.mixture, run.upstream["filtered"] / "kept", run.upstream["tokenizer"],
                          run.cfg.validation_fraction, run.output)
    # The plot inline, as in Dagster's tutorial: the UI shows it without serving files.
    plot = base64.b64encode((run.output / "ledger.png").read_bytes()).decode()
    metadata = {"tokens": stats["stream_tokens"], "ledger": MetadataValue.md(ledger_markdown(stats["ledger"])),
                "ledger_plot": MetadataValue.md(f"![ledger](data:image/png;base64,{plot})")}
    return StageResult(stats, metadata, artifacts=["mixture.json", "ledger.png"])
