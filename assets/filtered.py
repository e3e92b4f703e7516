"""``filtered``: per-domain rule sets, decontamination and dedup on datatrove; kept and rejected sets side by side."""

from dagster import MetadataValue

from curation.filter_stats import plot_filter_report
from curation.filters import build_filtered
from orchestration.resources import StageResult, StageRun


def build(run: StageRun) -> StageResult:
    stats = build_filtered(run.cfg.filter, run.upstream["corpus"], run.output, run.cfg.validation_fraction)
    artifacts = plot_filter_report(run.output)
    rules = sorted({rule for counts in stats["removed_by_domain"].values() for rule in counts})
    removed = f"| domain | kept | {' | '.join(rules)} |\n|---|---:|{'---:|' * len(rules)}\n" + "\n".join(
        f"| {domain} | {stats['kept_by_domain'].get(domain, 0)} | "
        + " | ".join(str(stats["removed_by_domain"].get(domain, {}).get(rule, 0)) for rule in rules) + " |"
        for domain in sorted({*stats["kept_by_domain"], *stats["removed_by_domain"]})
    )
    return StageResult(stats, {"documents": stats["kept"], "removed_by_domain_and_rule": MetadataValue.md(removed),
                               "removed_by_reason": MetadataValue.json(stats["removed_by_reason"]),
                               "cluster_sizes": MetadataValue.json(stats["cluster_sizes"]),
                               "report": MetadataValue.json({"files": artifacts})},
                       artifacts=artifacts)
