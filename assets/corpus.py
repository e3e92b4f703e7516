"""``corpus``: documents from the configured source (the Python installation by default)."""

from dagster import MetadataValue

from curation.corpus import build_corpus
from orchestration.resources import StageResult, StageRun


def build(run: StageRun) -> StageResult:
    stats = build_corpus(run.cfg.corpus, run.output)
    table = "| domain | documents | bytes |\n|---|---:|---:|\n" + "\n".join(
        f"| {name} | {d['documents']} | {d['bytes']:,} |" for name, d in stats["domains"].items()
    )
    return StageResult(stats, {"documents": stats["documents"], "domains": MetadataValue.md(table),
                               "quarantined": MetadataValue.json(stats["quarantined"])})
