"""The `mixed` stage's tokenization against raw Hugging Face `tokenizers` on the same documents.

Ours: `curation.mixture.encode_documents` (token arrays ending in EOS, as the stage stores them) in batches of
mixture.encode_batch_size. Reference: `Tokenizer.encode_batch` on the same batches, returning its Encoding
objects; `encode_batch_fast` (what ours builds on) is shown as well. All run interleaved, several repeats; the
ratio is ours / raw throughput. Documents come from a `filtered` output (--filtered, with --tokenizer), else
from the embedded corpus with a tokenizer trained here.

    python bench/bench_tokenize.py [--filtered STORE/filtered/FP --tokenizer STORE/tokenizer/FP]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.config import CorpusConfig, DomainCap, MixtureConfig, TokenizerConfig
from curation.corpus import build_corpus
from curation.documents import DOCUMENTS_FILE, iter_document_files, read_documents  # noqa: E402
from curation.mixture import encode_documents
from curation.tokenizer import EOS, load_tokenizer, train_tokenizer


def embedded_documents(folder: Path) -> tuple[Path, Path]:
    caps = {d: DomainCap(max_docs=150, max_bytes=600_000) for d in ("python", "code", "docs", "license", "data")}
    build_corpus(CorpusConfig(domains=caps), folder / "corpus")
    (folder / "documents").mkdir()
    (folder / "corpus" / DOCUMENTS_FILE).rename(folder / "documents" / DOCUMENTS_FILE)  # not the quarantine
    train_tokenizer(TokenizerConfig(), folder / "documents", folder / "tokenizer")
    return folder / "documents", folder / "tokenizer"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filtered", type=Path, help="a `filtered` output folder (its kept/ documents)")
    parser.add_argument("--tokenizer", type=Path, help="a `tokenizer` output folder")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.filtered:
            documents, tokenizer_dir = args.filtered / "kept", args.tokenizer
        else:
            documents, tokenizer_dir = embedded_documents(Path(scratch))
        texts = [doc["text"] for path in iter_document_files(documents) for doc in read_documents(path)]
        tokenizer = load_tokenizer(tokenizer_dir)
    eos, size = tokenizer.token_to_id(EOS), MixtureConfig().encode_batch_size
    batches = [texts[i : i + size] for i in range(0, len(texts), size)]
    n_bytes = sum(len(t.encode()) for t in texts)

    def ours() -> None:
        for batch in batches:
            encode_documents(tokenizer, batch, eos)

    def raw() -> None:
        for batch in batches:
            tokenizer.encode_batch(batch)

    def raw_fast() -> None:  # what ours builds on: no character offsets
        for batch in batches:
            tokenizer.encode_batch_fast(batch)

    sides = {"ours": ours, "raw": raw, "raw_fast": raw_fast}
    for side in sides.values():  # warm up
        side()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, side in sides.items():
            times[name].append(timed(side))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"command: python {' '.join(sys.argv)}")
    print(f"{len(texts):,} documents, {n_bytes / 1e6:.1f} MB, batches of {size}, {args.repeats} repeats interleaved")
    labels = {"ours": "encode_documents (ours)", "raw": "Tokenizer.encode_batch (raw)",
              "raw_fast": "Tokenizer.encode_batch_fast"}
    for name, label in labels.items():
        print(f"{label:30s} median {medians[name]:.3f} s  {n_bytes / medians[name] / 1e6:6.2f} MB/s")
    print(f"ratio ours / raw throughput: {medians['raw'] / medians['ours']:.2f}  (target >= 0.9)")
    print(f"ratio ours / encode_batch_fast throughput: {medians['raw_fast'] / medians['ours']:.2f}")


if __name__ == "__main__":
    main()
