"""Bootstrap intervals over held-out documents for a per-domain loss and bits-per-byte.

Tokens of one document are not independent draws, so the unit resampled is the document: each of ``samples``
resamples draws as many documents as there are, with replacement, and computes the ratio of sums (nats over
tokens, nats over bytes) of the drawn documents, the same estimator as the point estimate. The interval is the
2.5th to 97.5th percentile of those ratios (the percentile bootstrap). The generator is seeded, so the same
losses always give the same interval, to the bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class DocumentSums:
    """Per evaluated document: summed nats of its predicted tokens, their count, and the UTF-8 bytes they cover."""

    nats: np.ndarray  # float64 [documents]
    tokens: np.ndarray  # int64 [documents]
    bytes: np.ndarray  # float64 [documents]: prorated when only part of a document was evaluated


def document_sums(token_nats: np.ndarray, doc_offsets: np.ndarray, doc_bytes: np.ndarray) -> DocumentSums:
    """Attribute the nats of predicted positions 1..len(token_nats) to the document holding each predicted token.

    ``doc_offsets``: n + 1 token offsets of the documents in the split; ``doc_bytes``: their UTF-8 bytes. A document
    partly evaluated (the split's evaluated prefix ends inside it) counts the share of its bytes its tokens cover;
    documents with no evaluated token are left out.
    """
    positions = np.arange(1, len(token_nats) + 1)
    doc = np.searchsorted(doc_offsets, positions, side="right") - 1
    n_docs = len(doc_offsets) - 1
    nats = np.bincount(doc, weights=token_nats.astype(np.float64), minlength=n_docs)
    tokens = np.bincount(doc, minlength=n_docs)
    predictable = np.diff(doc_offsets).astype(np.float64)
    predictable[0] -= 1  # the split's first token has no context: it is never predicted
    # max(.., 1): a one-token first document has nothing predictable and gets no tokens (and so no bytes) anyway.
    n_bytes = doc_bytes * tokens / np.maximum(predictable, 1)
    evaluated = tokens > 0
    return DocumentSums(nats[evaluated], tokens[evaluated], n_bytes[evaluated])


@dataclass
class Intervals:
    loss: tuple[float, float]  # nats per token
    bits_per_byte: tuple[float, float]


def bootstrap_intervals(sums: DocumentSums, samples: int, seed: int, level: float = 0.95) -> Intervals:
    """Percentile-bootstrap intervals of loss and bits-per-byte over documents (the same resamples for both)."""
    rng = np.random.default_rng(seed)
    n = len(sums.nats)
    loss, bpb = np.empty(samples), np.empty(samples)
    for i in range(samples):
        picks = rng.integers(0, n, size=n)
        nats = sums.nats[picks].sum()
        loss[i] = nats / sums.tokens[picks].sum()
        bpb[i] = nats / (math.log(2) * sums.bytes[picks].sum())
    tails = [50 * (1 - level), 50 * (1 + level)]
    low_loss, high_loss = np.percentile(loss, tails)
    low_bpb, high_bpb = np.percentile(bpb, tails)
    return Intervals((float(low_loss), float(high_loss)), (float(low_bpb), float(high_bpb)))
