"""The ``filtered`` stage: per-domain rule sets, decontamination, exact and MinHash near dedup, on datatrove.

Stages (one datatrove executor each, chained; local processes by default, Slurm or Ray from config):

    (before)           choose the held-out documents per domain (curation.heldout) -> write "heldout"
    screen:            read corpus -> skip the held-out documents -> each domain's rule sets (prose: Gopher
                       quality + repetition, FineWeb; code: minified, alphanumeric ratio, generated markers;
                       python: parses, lint score)
                       -> write "screened" -> exact-dedup hashes
    exact_duplicates:  find exact duplicates and the size of each cluster
    unique:            drop exact duplicates (sizes kept) -> write "unique" -> MinHash signatures
    minhash_buckets, minhash_clusters: LSH candidate pairs, union-find clusters
    kept:              cluster sizes and combined duplicate counts -> drop near duplicates
                       -> n-gram decontamination against eval texts (held-out documents) -> write "kept"

Every rule writes what it removes to ``rejected/<rule>/`` with ``filter_rule`` (and datatrove's finer
``filter_reason``) in the document: the reject set is data, next to the kept set. Per-rule counts come from
datatrove's step statistics; every corpus document is accounted for as kept, rejected or held out, or the stage
fails (``stats["accounting"]``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupFilter, ExactDedupSignature, ExactFindDedups
from datatrove.pipeline.dedup.minhash import (
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.word_tokenizers import WordTokenizer

from curation.code_filters import (
    AlphanumericFilter,
    GeneratedFileFilter,
    LintScoreFilter,
    MinifiedFilter,
    PythonSyntaxFilter,
)
from curation.config import FilterConfig
from curation.decontamination import NGramDecontamination, build_index, eval_texts
from curation.dedup import DuplicateCounts, ExactSizes, exact_config, minhash_config
from curation.documents import iter_document_files
from curation.executors import Stage, run_chain
from curation.filter_stats import collect_stats, count_lines
from curation.heldout import HELDOUT_DIR, selection_stats, write_heldout
from curation.word_tokenizer import word_tokenizer

CORPUS_GLOB = "documents*.jsonl*"  # the corpus stage's documents, not its quarantine file
# The rules of each rule set, in the order they run. Domains choose rule sets in ``FilterConfig.domain_rules``.
RULE_SETS = {
    "prose": ("gopher_quality", "gopher_repetition", "fineweb_quality"),
    "code": ("minified", "alnum_ratio", "generated"),
    "python": ("python_syntax", "lint_score"),
}


class ForDomains(BaseFilter):
    """Applies a datatrove filter to the documents of some domains and passes the others through.

    ``unlisted``: also apply it to domains that ``FilterConfig.domain_rules`` does not name (``listed``).
    """

    def __init__(self, inner: BaseFilter, domains: set[str], exclusion_writer: DiskWriter,
                 unlisted: bool = False, listed: set[str] = frozenset()):
        # The name must be set before BaseFilter.__init__, which names the step's statistics after it.
        self.name = f"{inner.name} [{','.join(sorted(domains) + ['*'] * unlisted)}]"
        super().__init__(exclusion_writer)
        self.inner, self.domains, self.unlisted, self.listed = inner, set(domains), unlisted, set(listed)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        domain = doc.metadata.get("domain")
        if domain in self.domains or (self.unlisted and domain not in self.listed):
            return self.inner.filter(doc)
        return True


class SkipHeldOut(PipelineStep):
    """Passes on every document but the held-out ones, which were chosen and written before any filter."""

    name = "🔒 Skip held-out documents"

    def __init__(self, ids: frozenset[str]):
        super().__init__()
        self.ids = ids

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            if doc.id in self.ids:
                self.stat_update("held_out")  # not a "dropped" count: held out is not removed
                continue
            yield doc


class ShardWriter(JsonlWriter):
    """Uncompressed JSONL, one file per task; rejects carry the rule that removed them as ``filter_rule``.

    Uncompressed: datatrove's gzip headers carry the write time, and identical documents must give identical bytes,
    or an unchanged output would look changed and re-run everything below it. A file per task even when the task
    writes nothing: the dedup stages read intermediate folders task by task and must find task i's file at place i.
    """

    def __init__(self, folder: Path, rule: str = ""):
        super().__init__(str(folder), output_filename="${rank}.jsonl", compression=None, expand_metadata=True)
        self.rule = rule

    def write(self, document: Document, rank: int = 0, **kwargs) -> None:
        if self.rule:
            document.metadata["filter_rule"] = self.rule
        super().write(document, rank, **kwargs)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.output_folder.open(f"{rank:05d}.jsonl", "wb").close()
        yield from super().run(data, rank, world_size)


def _reader(folder: Path, glob: str = "*.jsonl") -> JsonlReader:
    # add_file_path=False: datatrove would otherwise put the absolute machine path into every document.
    return JsonlReader(str(folder), glob_pattern=glob, add_file_path=False)


def _rules(cfg: FilterConfig, words: str | WordTokenizer) -> dict[str, BaseFilter]:
    """Every rule by its slug. The prose rules share one tokenizer object: datatrove caches the split of the last
    texts by (text, tokenizer), so each document is split once for all three."""
    prose, code = cfg.prose, cfg.code
    return {
        "gopher_quality": GopherQualityFilter(
            min_doc_words=prose.min_doc_words, max_doc_words=prose.max_doc_words,
            min_avg_word_length=prose.min_avg_word_length, max_avg_word_length=prose.max_avg_word_length,
            max_symbol_word_ratio=prose.max_symbol_word_ratio, max_bullet_lines_ratio=prose.max_bullet_lines_ratio,
            max_non_alpha_words_ratio=prose.max_non_alpha_words_ratio, min_stop_words=prose.min_stop_words,
            language=words),
        "gopher_repetition": GopherRepetitionFilter(dup_line_frac=prose.dup_line_frac,
                                                    dup_para_frac=prose.dup_para_frac, language=words),
        "fineweb_quality": FineWebQualityFilter(
            line_punct_thr=prose.line_punct_thr, short_line_thr=prose.short_line_thr,
            char_duplicates_ratio=prose.char_duplicates_ratio, new_line_ratio=prose.new_line_ratio, language=words),
        "minified": MinifiedFilter(code.max_line_chars, code.max_chars_per_line, code.minified_min_chars),
        "alnum_ratio": AlphanumericFilter(code.min_alnum_ratio),
        "generated": GeneratedFileFilter(code.generated_header_lines),
        "python_syntax": PythonSyntaxFilter(),
        "lint_score": LintScoreFilter(code.min_lint_score, code.lint_max_line_chars),
    }


def rule_steps(cfg: FilterConfig, rejected: Path, words: str | WordTokenizer) -> list[BaseFilter]:
    """Each rule once, routed to the domains whose rule sets include it, with its own reject folder."""
    chosen = {**cfg.domain_rules, "*": cfg.default_rule_sets}
    unknown = sorted({name for sets in chosen.values() for name in sets} - RULE_SETS.keys())
    if unknown:
        raise ValueError(f"filter.domain_rules names unknown rule sets {unknown}; valid: {sorted(RULE_SETS)}")
    steps = []
    for slug, rule in _rules(cfg, words).items():
        domains = {domain for domain, sets in chosen.items() if any(slug in RULE_SETS[s] for s in sets)}
        if domains:
            steps.append(ForDomains(rule, domains - {"*"}, ShardWriter(rejected / slug, slug),
                                    unlisted="*" in domains, listed=set(cfg.domain_rules)))
    return steps


def decontamination_steps(cfg: FilterConfig, heldout_dir: Path, rejected: Path) -> list[BaseFilter]:
    decon = cfg.decontamination
    if not decon.enabled:
        return []
    index = build_index(eval_texts(decon, iter_document_files(heldout_dir)), decon.ngram_size)
    return [NGramDecontamination(index, decon.ngram_size, decon.max_overlap,
                                 ShardWriter(rejected / "decontaminated", "decontaminated"))]


def filter_stages(cfg: FilterConfig, corpus_dir: Path, out_dir: Path, heldout_ids: frozenset[str]) -> list[Stage]:
    """The chain of datatrove stages, from the corpus to ``out_dir/kept`` and ``out_dir/rejected/<rule>``.

    The held-out documents (``out_dir/heldout``, ``heldout_ids``) are skipped first, so no filter can take them.
    Decontamination runs last, on what dedup kept: a training copy of an eval text is then reported as a duplicate
    when it is one.
    """
    work, rejected = out_dir / "work", out_dir / "rejected"
    tasks, dedup, words = len(list(corpus_dir.glob(CORPUS_GLOB))), cfg.dedup, word_tokenizer(cfg.word_tokenizer)
    exact = exact_config()
    stages = [Stage("screen", [
        _reader(corpus_dir, CORPUS_GLOB), SkipHeldOut(heldout_ids), *rule_steps(cfg, rejected, words),
        ShardWriter(work / "screened"),
        *([ExactDedupSignature(str(work / "exact_signatures"), exact)] if dedup.exact else []),
    ], tasks)]
    unique = [_reader(work / "screened")]
    if dedup.exact:
        stages.append(Stage("exact_duplicates", [
            ExactFindDedups(str(work / "exact_signatures"), str(work / "exact_duplicates"), exact)]))
        unique += [ExactDedupFilter(str(work / "exact_duplicates"), exact,
                                    exclusion_writer=ShardWriter(rejected / "exact_duplicate", "exact_duplicate")),
                   ExactSizes(str(work / "exact_sizes"))]
    last = [*decontamination_steps(cfg, out_dir / HELDOUT_DIR, rejected), ShardWriter(out_dir / "kept")]
    if not dedup.near:
        return [*stages, Stage("kept", [*unique, DuplicateCounts(None, None), *last], tasks)]
    minhash, signatures = minhash_config(dedup), str(work / "minhash_signatures")
    buckets, clusters = str(work / "minhash_buckets"), str(work / "minhash_clusters")
    near_rejects = ShardWriter(rejected / "near_duplicate", "near_duplicate")
    return [*stages,
            Stage("unique", [*unique, ShardWriter(work / "unique"),
                             MinhashDedupSignature(signatures, config=minhash, language=words)], tasks),
            Stage("minhash_buckets", [MinhashDedupBuckets(signatures, buckets, config=minhash)], minhash.num_buckets),
            Stage("minhash_clusters", [MinhashDedupCluster(buckets, clusters, config=minhash, save_cluster_id=True)]),
            Stage("kept", [
                _reader(work / "unique"),
                DuplicateCounts(clusters, str(work / "exact_sizes") if dedup.exact else None),
                MinhashDedupFilter(clusters, exclusion_writer=near_rejects),
                *last,
            ], tasks)]


def removed_by_reason(stats: list[dict]) -> dict[str, int]:
    """Per-reason removal counts from datatrove's step statistics: filters count ``dropped_<reason>``, dedup
    filters only ``dropped``."""
    dedup_reasons = {"exact-deduplication stage 3": "exact_duplicate", "MinHash stage 4": "near_duplicate"}
    removed: dict[str, int] = {}
    for step in stats:
        for key, value in step["stats"].items():
            reason = key.removeprefix("dropped_") if key.startswith("dropped_") else None
            if key == "dropped":
                reason = next((r for marker, r in dedup_reasons.items() if marker in step["name"]), None)
            if reason:
                removed[reason] = removed.get(reason, 0) + (value if isinstance(value, int) else int(value["total"]))
    return removed


def build_filtered(cfg: FilterConfig, corpus_dir: Path, out_dir: Path) -> dict:
    """Hold out documents per domain into ``out_dir/heldout``; filter and deduplicate the rest of the corpus in
    ``corpus_dir`` into ``out_dir/kept`` and ``out_dir/rejected``.

    Writes ``out_dir/report/filter_stats.json`` (histograms, cluster sizes) and returns the summary statistics,
    with ``accounting``: the corpus documents and how many were kept, rejected, quarantined and held out.
    """
    corpus_files = sorted(corpus_dir.glob(CORPUS_GLOB))
    if not corpus_files:
        raise FileNotFoundError(f"no corpus documents ({CORPUS_GLOB}) in the corpus output: re-materialize corpus")
    heldout = write_heldout(corpus_files, cfg.heldout, out_dir / HELDOUT_DIR)
    heldout_ids = frozenset(doc_id for held in heldout.values() for doc_id in held.ids)
    stages = filter_stages(cfg, corpus_dir, out_dir, heldout_ids)
    step_stats = run_chain(cfg.executor, stages, cfg.workers, out_dir / "work" / "logs")
    # Signatures, buckets, intermediate copies and logs are scratch: the outputs are the kept, rejected and held-out
    # sets.
    shutil.rmtree(out_dir / "work")
    stats = collect_stats(out_dir, removed_by_reason(step_stats), [s["name"] for s in step_stats])
    stats.update(selection_stats(heldout, cfg.heldout))
    # filtered sets no document aside as unreadable: bad input was quarantined by the corpus stage, before it
    # became a document, so "quarantined" is 0 here and the corpus's own stats count that input.
    accounting = {"corpus": sum(count_lines(path) for path in corpus_files), "kept": stats["kept"],
                  "rejected": sum(stats["rejected_by_rule"].values()), "quarantined": 0,
                  "held_out": sum(len(held.ids) for held in heldout.values())}
    stats["accounting"] = accounting
    if accounting["corpus"] != sum(accounting[key] for key in ("kept", "rejected", "quarantined", "held_out")):
        raise RuntimeError(f"filtered lost documents: {accounting}")
    return stats
