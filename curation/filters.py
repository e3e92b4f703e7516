"""The ``filtered`` stage: per-domain quality filters, exact dedup and MinHash near dedup, on datatrove.

Pipeline (each line one datatrove executor run, all local by default):

    quality:   read corpus -> prose rules (Gopher quality + repetition, FineWeb) on prose domains
                           -> code rules (parses, line lengths, alphanumeric ratio, generated markers) on code domains
                           -> exact dedup -> write "screened"
    minhash:   signatures -> buckets -> clusters (with cluster sizes) -> filter "screened" -> write "kept"

Every rule writes what it removes to ``rejected/<rule>/`` with the reason in ``filter_reason``: the reject set is
data, next to the kept set. Per-rule counts come from datatrove's own step statistics.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
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

from curation.code_filters import AlphanumericFilter, GeneratedFileFilter, LineLengthFilter, PythonSyntaxFilter
from curation.documents import iter_document_files, read_documents


@dataclass
class ProseRules:
    """Gopher quality / repetition and FineWeb thresholds for natural-language documents."""

    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: int = 3
    max_avg_word_length: int = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_non_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    line_punct_thr: float = 0.12
    short_line_thr: float = 0.67
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


@dataclass
class CodeRules:
    max_line_chars: int = 1000
    max_mean_line_chars: float = 100.0
    min_alnum_ratio: float = 0.25
    generated_header_lines: int = 10


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    ngram_size: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8


@dataclass
class FilterConfig:
    prose_domains: list[str] = field(default_factory=lambda: ["docs", "web"])
    code_domains: list[str] = field(default_factory=lambda: ["python", "code", "data"])
    python_domains: list[str] = field(default_factory=lambda: ["python"])
    prose: ProseRules = field(default_factory=ProseRules)
    code: CodeRules = field(default_factory=CodeRules)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    # How many processes datatrove may use. Changes speed, never bytes: kept out of the fingerprint.
    workers: int = 1


class ForDomains(BaseFilter):
    """Applies a datatrove filter to the documents of some domains and passes the others through."""

    def __init__(self, inner: BaseFilter, domains: list[str], exclusion_writer: DiskWriter):
        # The name must be set before BaseFilter.__init__, which names the step's statistics after it.
        self.name = f"{inner.name} [{','.join(sorted(domains))}]"
        super().__init__(exclusion_writer)
        self.inner, self.domains = inner, set(domains)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("domain") not in self.domains:
            return True
        return self.inner.filter(doc)


class ExactDedupFilter(BaseFilter):
    """Keeps the first copy of each exact text. One in-memory pass: right for a single task on one machine."""

    name = "🫂 Exact dedup"

    def __init__(self, exclusion_writer: DiskWriter):
        super().__init__(exclusion_writer)
        self.seen: set[bytes] = set()

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        digest = hashlib.sha1(doc.text.strip().encode()).digest()
        if digest in self.seen:
            return False, "exact_duplicate"
        self.seen.add(digest)
        return True


def _writer(folder: Path) -> JsonlWriter:
    # Uncompressed: datatrove's gzip headers carry the write time, and identical documents must give identical
    # bytes, or an unchanged output would look changed and re-run everything below it.
    return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None, expand_metadata=True)


def _reader(folder: Path) -> JsonlReader:
    # add_file_path=False: datatrove would otherwise put the absolute machine path into every document.
    return JsonlReader(str(folder), glob_pattern="*.jsonl*", add_file_path=False)


def quality_steps(cfg: FilterConfig, rejected: Path) -> list[BaseFilter]:
    """The per-domain quality rules, each with its own reject folder."""
    prose, code = cfg.prose, cfg.code
    rules: list[tuple[str, BaseFilter, list[str]]] = [
        ("gopher_quality", GopherQualityFilter(
            min_doc_words=prose.min_doc_words, max_doc_words=prose.max_doc_words,
            min_avg_word_length=prose.min_avg_word_length, max_avg_word_length=prose.max_avg_word_length,
            max_symbol_word_ratio=prose.max_symbol_word_ratio, max_bullet_lines_ratio=prose.max_bullet_lines_ratio,
            max_non_alpha_words_ratio=prose.max_non_alpha_words_ratio, min_stop_words=prose.min_stop_words,
        ), cfg.prose_domains),
        ("gopher_repetition", GopherRepetitionFilter(
            dup_line_frac=prose.dup_line_frac, dup_para_frac=prose.dup_para_frac,
        ), cfg.prose_domains),
        ("fineweb_quality", FineWebQualityFilter(
            line_punct_thr=prose.line_punct_thr, short_line_thr=prose.short_line_thr,
            char_duplicates_ratio=prose.char_duplicates_ratio, new_line_ratio=prose.new_line_ratio,
        ), cfg.prose_domains),
        ("python_syntax", PythonSyntaxFilter(), cfg.python_domains),
        ("line_length", LineLengthFilter(code.max_line_chars, code.max_mean_line_chars), cfg.code_domains),
        ("alnum_ratio", AlphanumericFilter(code.min_alnum_ratio), cfg.code_domains),
        ("generated", GeneratedFileFilter(code.generated_header_lines), cfg.code_domains),
    ]
    steps: list[BaseFilter] = [ForDomains(rule, domains, _writer(rejected / slug)) for slug, rule, domains in rules]
    if cfg.dedup.exact:
        steps.append(ExactDedupFilter(_writer(rejected / "exact_duplicate")))
    return steps


def _count(value: int | dict) -> int:
    return value if isinstance(value, int) else int(value["total"])


def _removed_by_reason(stats: list[dict]) -> dict[str, int]:
    """Per-rule removal counts from datatrove's step statistics (``dropped_<reason>`` counters)."""
    removed: dict[str, int] = {}
    for step in stats:
        for key, value in step["stats"].items():
            if key.startswith("dropped_"):
                reason = key.removeprefix("dropped_")
                removed[reason] = removed.get(reason, 0) + _count(value)
            elif key == "dropped" and "MinHash stage 4" in step["name"]:
                removed["near_duplicate"] = _count(value)
    return removed


def _run(pipeline: list, work: Path, name: str, tasks: int = 1, workers: int = 1) -> list[dict]:
    """One datatrove executor run; its statistics (and logs) land under ``work/logs/<name>``."""
    executor = LocalPipelineExecutor(
        pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=str(work / "logs" / name),
        skip_completed=False,
    )
    # datatrove logs every step to stderr at INFO; keep the console readable; its log files stay in work/logs.
    with contextlib.redirect_stderr(io.StringIO()):
        executor.run()
    return json.loads((work / "logs" / name / "stats.json").read_text())


def build_filtered(cfg: FilterConfig, corpus_dir: Path, out_dir: Path) -> dict:
    """Filter and deduplicate the corpus in ``corpus_dir`` into ``out_dir/kept`` and ``out_dir/rejected``."""
    work, rejected = out_dir / "work", out_dir / "rejected"
    screened = work / "screened"
    stats = _run([_reader(corpus_dir), *quality_steps(cfg, rejected), _writer(screened)], work, "quality")
    if cfg.dedup.near:
        stats += near_dedup(cfg, screened, out_dir / "kept", rejected / "near_duplicate", work)
    else:
        shutil.copytree(screened, out_dir / "kept")
    # Signatures, buckets and logs are scratch: the outputs are the kept and rejected documents.
    shutil.rmtree(work)
    (out_dir / "kept").mkdir(exist_ok=True)
    kept = Counter(doc["domain"] for path in iter_document_files(out_dir / "kept") for doc in read_documents(path))
    return {"kept": sum(kept.values()), "kept_by_domain": dict(sorted(kept.items())),
            "removed_by_rule": _removed_by_reason(stats), "steps": [s["name"] for s in stats]}


def near_dedup(cfg: FilterConfig, screened: Path, kept: Path, rejected: Path, work: Path) -> list[dict]:
    minhash = MinhashConfig(
        n_grams=cfg.dedup.ngram_size, num_buckets=cfg.dedup.num_buckets,
        hashes_per_bucket=cfg.dedup.hashes_per_bucket,
    )
    sigs, buckets, clusters = work / "signatures", work / "buckets", work / "clusters"
    stats = _run([_reader(screened), MinhashDedupSignature(str(sigs), config=minhash)], work, "signatures")
    stats += _run([MinhashDedupBuckets(str(sigs), str(buckets), config=minhash)], work, "buckets",
                  tasks=minhash.num_buckets, workers=cfg.workers)
    stats += _run([MinhashDedupCluster(str(buckets), str(clusters), config=minhash, save_cluster_size=True)],
                  work, "clusters")
    stats += _run([
        _reader(screened),
        MinhashDedupFilter(str(clusters), exclusion_writer=_writer(rejected), load_cluster_sizes=True),
        _writer(kept),
    ], work, "minhash_filter")
    return stats
