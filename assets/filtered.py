"""``filtered``: held-out documents set apart first, then per-domain rule sets, decontamination and dedup on
datatrove; kept, rejected and held-out sets side by side."""

from dagster import MetadataValue

from curation.filter_stats import plot_filter_report
from curation.filters import build_filtered
from orchestration.resources import StageResult, StageRun


def build(run: StageRun) -> StageResult:
    stats = build_filtered(run.cfg.filter, run.upstream["corpus"], run.output)
    for warning in stats["held_out_warnings"]:
        run.context.log.warning(warning)
    artifacts = plot_filter_report(run.output)
    rules = sorted({rule for counts in stats["removed_by_domain"].values() for rule in counts})
    held_out = stats["held_out_by_domain"]
    removed = (f"| domain | held out | kept | {' | '.join(rules)} |\n|---|---:|---:|{'---:|' * len(rules)}\n"
               + "\n".join(
        f"| {domain} | {held_out.get(domain, {}).get('documents', 0)} | {stats['kept_by_domain'].get(domain, 0)} | "
        + " | ".join(str(stats["removed_by_domain"].get(domain, {}).get(rule, 0)) for rule in rules) + " |"
        for domain in sorted({*stats["kept_by_domain"], *stats["removed_by_domain"], *held_out})
    ))
    return StageResult(stats, {"documents": stats["kept"], "removed_by_domain_and_rule": MetadataValue.md(removed),
                               "removed_by_reason": MetadataValue.json(stats["removed_by_reason"]),
                               "cluster_sizes": MetadataValue.json(stats["cluster_sizes"]),
                               # corpus = kept + rejected + quarantined + held_out (the stage checks it)
                               "accounting": MetadataValue.json(stats["accounting"]),
                               "held_out_by_domain": MetadataValue.json(held_out),
                               "held_out_warnings": MetadataValue.json(stats["held_out_warnings"]),
                               "report": MetadataValue.json({"files": artifacts})},
                       artifacts=artifacts)
