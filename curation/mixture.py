"""The ``mixed`` stage: tokenized per-domain shards, a train/validation split, and the mixed training stream.

Layout of the output folder:

    shards/<domain>/train.bin, val.bin   uint32 tokens, each document followed by EOS (memory-mappable)
    train_stream.bin                     the training stream: whole documents interleaved by mixture weight
    mixture.json                         per-domain documents, tokens, bytes, and the ledger (target vs realized)

The stream takes whole documents, always from the domain furthest below its target share, cycling through each
domain's documents in a seeded order (upsampling repeats a domain, downsampling uses part of it). That keeps the
realized share of every domain within one document of its target.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curation.documents import is_validation, iter_document_files, read_documents
from curation.tokenizer import EOS, load_tokenizer

TOKEN_DTYPE = np.uint32


@dataclass
class MixtureConfig:
    weights: dict[str, float] = field(default_factory=dict)
    train_tokens: int = 2_000_000
    seed: int = 0
    encode_batch_size: int = 256


def _tokenize_domains(filtered_kept: Path, tokenizer_dir: Path, validation_fraction: float, batch: int):
    """Token arrays per (domain, split), plus document and byte counts."""
    tokenizer = load_tokenizer(tokenizer_dir)
    eos = tokenizer.token_to_id(EOS)
    docs: dict[tuple[str, str], list[np.ndarray]] = {}
    n_bytes: dict[tuple[str, str], int] = {}
    pending: list[tuple[tuple[str, str], str]] = []

    def flush() -> None:
        encodings = tokenizer.encode_batch([text for _, text in pending])
        for (key, _), encoding in zip(pending, encodings, strict=True):
            docs.setdefault(key, []).append(np.array([*encoding.ids, eos], dtype=TOKEN_DTYPE))
        pending.clear()

    for path in iter_document_files(filtered_kept):
        for doc in read_documents(path):
            split = "val" if is_validation(doc["id"], validation_fraction) else "train"
            key = (doc["domain"], split)
            n_bytes[key] = n_bytes.get(key, 0) + doc["bytes"]
            pending.append((key, doc["text"]))
            if len(pending) >= batch:
                flush()
    flush()
    return docs, n_bytes


def interleave(train_docs: dict[str, list[np.ndarray]], weights: dict[str, float], total: int, seed: int):
    """Whole documents, each from the domain furthest below its target; returns the stream and the ledger."""
    rng = random.Random(seed)
    orders = {d: rng.sample(range(len(train_docs[d])), len(train_docs[d])) for d in sorted(weights)}
    cursor = dict.fromkeys(orders, 0)
    realized = dict.fromkeys(orders, 0)
    pieces, length = [], 0
    while length < total:
        domain = min(orders, key=lambda d: (realized[d] - weights[d] * length, d))
        doc = train_docs[domain][orders[domain][cursor[domain] % len(orders[domain])]]
        cursor[domain] += 1
        pieces.append(doc)
        realized[domain] += len(doc)
        length += len(doc)
    ledger = {
        d: {
            "weight": weights[d],
            "target_tokens": round(weights[d] * length),
            "realized_tokens": realized[d],
            "realized_share": realized[d] / length,
            "epochs": cursor[d] / len(orders[d]),
        }
        for d in orders
    }
    return np.concatenate(pieces), ledger


def normalized_weights(weights: dict[str, float], available: set[str]) -> dict[str, float]:
    active = {d: float(w) for d, w in weights.items() if w > 0}
    if not active:
        raise ValueError(f"mixture.weights gives no domain a positive weight; domains with data: {sorted(available)}")
    missing = sorted(set(active) - available)
    if missing:
        raise ValueError(
            f"mixture.weights names domains with no training documents: {missing}; "
            f"domains with data: {sorted(available)}"
        )
    total = sum(active.values())
    return {d: w / total for d, w in active.items()}


def build_mixture(
    cfg: MixtureConfig, filtered_kept: Path, tokenizer_dir: Path, validation_fraction: float, out_dir: Path
) -> dict:
    docs, n_bytes = _tokenize_domains(filtered_kept, tokenizer_dir, validation_fraction, cfg.encode_batch_size)
    domains = {}
    for (domain, split), arrays in sorted(docs.items()):
        folder = out_dir / "shards" / domain
        folder.mkdir(parents=True, exist_ok=True)
        tokens = np.concatenate(arrays)
        tokens.tofile(folder / f"{split}.bin")
        domains.setdefault(domain, {})[split] = {
            "documents": len(arrays), "tokens": int(tokens.size), "bytes": n_bytes[(domain, split)],
        }
    train_docs = {d: arrays for (d, split), arrays in docs.items() if split == "train"}
    weights = normalized_weights(cfg.weights, set(train_docs))
    stream, ledger = interleave(train_docs, weights, cfg.train_tokens, cfg.seed)
    stream.tofile(out_dir / "train_stream.bin")
    summary = {"domains": domains, "ledger": ledger, "stream_tokens": int(stream.size)}
    (out_dir / "mixture.json").write_text(json.dumps(summary, indent=2))
    return summary
