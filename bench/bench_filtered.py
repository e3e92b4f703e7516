"""The `filtered` stage's library function against a plain datatrove pipeline with the same filters.

Ours: `curation.filters.build_filtered` (rule sets per domain, decontamination, datatrove exact dedup + MinHash
with cluster sizes and combined duplicate counts, reject sets, statistics report, accounting check).
Plain: the same filter steps, the same decontamination index and datatrove's own exact-dedup and MinHash stages,
on LocalPipelineExecutors, writing only kept and rejected documents: no cluster-size bookkeeping, no report.
Both run on the same documents (the demo corpus, `experiment=demo`), interleaved, several repeats; the ratio is
ours / plain throughput. A second check times datatrove's default spaCy word tokenizer against ours on the prose
documents and counts how often Gopher's quality rule decides the same with both.

    python bench/bench_filtered.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datatrove.data import Document  # noqa: E402
from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.dedup.exact_dedup import ExactDedupFilter, ExactDedupSignature, ExactFindDedups  # noqa: E402
from datatrove.pipeline.dedup.minhash import (  # noqa: E402
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.filters import GopherQualityFilter  # noqa: E402
from datatrove.pipeline.readers import JsonlReader  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402

from curation.config import FilterConfig
from curation.corpus import build_corpus  # noqa: E402
from curation.decontamination import NGramDecontamination, build_index, eval_texts  # noqa: E402
from curation.dedup import exact_config, minhash_config  # noqa: E402
from curation.documents import DOCUMENTS_FILE, iter_document_files, read_documents  # noqa: E402
from curation.filters import CORPUS_GLOB, build_filtered, rule_steps
from curation.heldout import write_heldout  # noqa: E402
from curation.word_tokenizer import RegexWordTokenizer, word_tokenizer  # noqa: E402
from orchestration.compose import compose_experiment  # noqa: E402


def plain_datatrove(cfg: FilterConfig, corpus: Path, out: Path) -> None:
    """The same filters as a datatrove user would chain them, with datatrove's dedup stages as documented; the same
    held-out documents are the eval texts (not skipped: a plain pipeline filters everything)."""
    work, words = out / "work", word_tokenizer(cfg.word_tokenizer)
    decon = cfg.decontamination
    write_heldout(sorted(corpus.glob(CORPUS_GLOB)), cfg.heldout, out / "heldout")
    index = build_index(eval_texts(decon, iter_document_files(out / "heldout")), decon.ngram_size)

    def writer(folder: Path) -> JsonlWriter:
        return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None, expand_metadata=True)

    def reader(folder: Path, glob: str = "*.jsonl") -> JsonlReader:
        return JsonlReader(str(folder), glob_pattern=glob, add_file_path=False)

    exact, minhash = exact_config(), minhash_config(cfg.dedup)
    sigs, buckets, clusters = str(work / "sigs"), str(work / "buckets"), str(work / "clusters")
    stages = [
        ([reader(corpus, CORPUS_GLOB), *rule_steps(cfg, out / "rejected", words), writer(work / "screened"),
          ExactDedupSignature(str(work / "exact_sigs"), exact)], 1),
        ([ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), exact)], 1),
        ([reader(work / "screened"), ExactDedupFilter(str(work / "exact_dups"), exact,
                                                      exclusion_writer=writer(out / "rejected" / "exact")),
          writer(work / "unique"), MinhashDedupSignature(sigs, config=minhash, language=words)], 1),
        ([MinhashDedupBuckets(sigs, buckets, config=minhash)], minhash.num_buckets),
        ([MinhashDedupCluster(buckets, clusters, config=minhash)], 1),
        ([reader(work / "unique"), MinhashDedupFilter(clusters, exclusion_writer=writer(out / "rejected" / "near")),
          NGramDecontamination(index, decon.ngram_size, decon.max_overlap,
                               writer(out / "rejected" / "decontaminated")),
          writer(out / "kept")], 1),
    ]
    with contextlib.redirect_stderr(io.StringIO()):
        for i, (pipeline, tasks) in enumerate(stages):
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(cfg.workers, tasks),
                                  logging_dir=str(work / "logs" / str(i)), skip_completed=False).run()


def timed(fn, out: Path) -> float:
    start = time.perf_counter()
    fn(out)
    return time.perf_counter() - start


def tokenizer_check(cfg: FilterConfig, corpus: Path) -> None:
    prose = cfg.prose
    texts = [d["text"] for d in read_documents(corpus / DOCUMENTS_FILE) if d["domain"] in ("docs", "license")]
    rules = {name: GopherQualityFilter(
        min_doc_words=prose.min_doc_words, max_doc_words=prose.max_doc_words,
        min_avg_word_length=prose.min_avg_word_length, max_avg_word_length=prose.max_avg_word_length,
        max_symbol_word_ratio=prose.max_symbol_word_ratio, max_bullet_lines_ratio=prose.max_bullet_lines_ratio,
        max_non_alpha_words_ratio=prose.max_non_alpha_words_ratio, min_stop_words=prose.min_stop_words,
        language=tokenizer) for name, tokenizer in (("spacy", "en"), ("regex", RegexWordTokenizer()))}
    rules["spacy"].filter(Document(text="load the model first", id="warm-up"))
    decisions, seconds = {}, {}
    for name, rule in rules.items():
        start = time.perf_counter()
        decisions[name] = [rule.filter(Document(text=t, id=str(i))) is True for i, t in enumerate(texts)]
        seconds[name] = time.perf_counter() - start
    same = sum(a == b for a, b in zip(decisions["spacy"], decisions["regex"], strict=True))
    print(f"Gopher quality on {len(texts)} prose documents ({sum(map(len, texts)) / 1e6:.1f} M chars): "
          f"spaCy tokenizer {seconds['spacy']:.2f} s, regex {seconds['regex']:.2f} s "
          f"({seconds['spacy'] / seconds['regex']:.1f}x); same decision for {same}/{len(texts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    experiment = compose_experiment(["experiment=demo"])[0]
    cfg = experiment.filter
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        build_corpus(experiment.corpus, root / "corpus")
        documents = sum(1 for _ in read_documents(root / "corpus" / DOCUMENTS_FILE))
        sides = {
            "ours": lambda out: build_filtered(cfg, root / "corpus", out),
            "plain datatrove": lambda out: plain_datatrove(cfg, root / "corpus", out),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
            for name in order:
                times[name].append(timed(sides[name], root / f"{name.replace(' ', '_')}-{repeat}"))
        print(f"filtered on the demo corpus: {documents} documents, {args.repeats} repeats, interleaved")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:16s} median {median:6.2f} s  {documents / median:7.1f} docs/s  "
                  f"(runs: {', '.join(f'{v:.2f}' for v in values)})")
        ratio = statistics.median(times["plain datatrove"]) / statistics.median(times["ours"])
        print(f"  throughput ratio ours / plain: {ratio:.3f}")
        tokenizer_check(cfg, root / "corpus")
    print("command: python bench/bench_filtered.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
