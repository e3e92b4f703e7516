"""N-gram decontamination: training documents that share too many word n-grams with evaluation texts are dropped.

Evaluation texts are the corpus's held-out documents (``curation.heldout``, chosen before any filter and never
trained on) plus any JSONL files of eval texts named in config. The index is a sorted array of 64-bit
n-gram hashes built once on the submitting host and shipped with the step, so it works on every executor.
N-grams are hashed word by word (xxhash, stable across processes) and combined with a polynomial in numpy, so a
document costs one regex split and a few vectorised operations.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import fsspec
import numpy as np
import orjson
import xxhash
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from curation.config import DecontaminationConfig
from curation.documents import read_documents

WORD = re.compile(r"\w+")
MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: the polynomial's base


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """Hashes of the lower-cased word n-grams of ``text`` (empty for texts of fewer than n words)."""
    words = WORD.findall(text.lower())
    if len(words) < n:
        return np.empty(0, dtype=np.uint64)
    hashes = np.fromiter((xxhash.xxh64_intdigest(w) for w in words), dtype=np.uint64, count=len(words))
    windows = np.lib.stride_tricks.sliding_window_view(hashes, n)
    powers = MULTIPLIER ** np.arange(n, dtype=np.uint64)  # wraps modulo 2^64, as intended
    return (windows * powers).sum(axis=1, dtype=np.uint64)


def _eval_file_texts(pattern: str, text_field: str) -> Iterable[str]:
    fs, _, paths = fsspec.get_fs_token_paths(pattern)
    if not paths:
        raise FileNotFoundError(f"filter.decontamination.eval_paths entry '{pattern}' matches no file")
    for path in sorted(paths):
        with fs.open(path, "rb", compression="infer") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as error:
                    raise ValueError(f"eval text file {Path(path).name}:{number} is not JSON: {error}") from None
                if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                    raise ValueError(f"eval text file {Path(path).name}:{number} has no string field "
                                     f"'{text_field}': set filter.decontamination.eval_text_field")
                yield record[text_field]


def eval_texts(cfg: DecontaminationConfig, heldout_files: list[Path]) -> Iterable[str]:
    if cfg.use_validation_split:
        for path in heldout_files:
            for record in read_documents(path):
                yield record["text"]
    for pattern in cfg.eval_paths:
        yield from _eval_file_texts(pattern, cfg.eval_text_field)


def build_index(texts: Iterable[str], n: int) -> np.ndarray:
    parts = [ngram_hashes(text, n) for text in texts]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)


class NGramDecontamination(BaseFilter):
    """Drops training documents whose n-grams overlap the eval index by ``max_overlap`` or more.

    Held-out documents never reach it: they were set apart before the filters.
    """

    name = "🧪 N-gram decontamination"

    def __init__(self, index: np.ndarray, ngram_size: int, max_overlap: float, exclusion_writer: DiskWriter = None):
        super().__init__(exclusion_writer)
        self.index, self.ngram_size, self.max_overlap = index, ngram_size, max_overlap

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if not self.index.size:
            return True
        hashes = ngram_hashes(doc.text, self.ngram_size)
        if not hashes.size:
            return True
        positions = np.minimum(np.searchsorted(self.index, hashes), self.index.size - 1)
        overlap = np.count_nonzero(self.index[positions] == hashes) / hashes.size
        if overlap >= self.max_overlap:
            return False, "eval_ngram_overlap"
        return True
