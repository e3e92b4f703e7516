"""The ``mixed`` stage: tokenized per-domain shards, a train/validation split, and the mixed, phased training stream.

Layout of the output folder:

    shards/<domain>/train.bin, val.bin   uint32 tokens, each document followed by EOS (memory-mappable); train
                                         holds filtered's kept documents, val its held-out ones (curation.heldout)
    shards/<domain>/<split>.index.npz    per document: doc_offsets (n + 1 token offsets into the .bin) and
                                         doc_bytes (UTF-8 bytes of its text), so evaluation can attribute loss
    train_stream.bin (+ .index.npz)      the training stream: its phases in order, each whole documents
                                         interleaved by the phase's weights (the loader's dataset_path)
    replay_stream.bin (+ .index.npz)     the replay mixture, when mixture.replay.fraction > 0
    mixture.json                         per-domain documents, tokens, bytes, and the ledger (target vs realized)

Each phase takes whole documents (long ones as pieces of at most max_doc_tokens), always from the domain furthest
below its target share, cycling through each domain's documents in a seeded order that carries over from phase to
phase (upsampling repeats a domain, downsampling uses part of it). That keeps every domain's realized share within
one document (or piece) of its target.
With ``mixture.rehydration.enabled`` each domain's documents enter that order as often as their duplicate-cluster
size and its filter pass rate say (``curation.rehydration``), before long ones are split.
Source conditioning (MeCo) prepends ``source_template`` to every document of a conditioned phase; the loader
trains on those tokens without loss. The index sidecars are described in ``curation.packing``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from curation.config import MixtureConfig, PhaseConfig, ReplayConfig
from curation.documents import iter_document_files, read_documents
from curation.heldout import HELDOUT_DIR
from curation.ledger import stream_ledger
from curation.packing import REPLAY_STREAM, TOKEN_DTYPE, StreamIndex
from curation.rehydration import rehydration_repeats
from curation.tokenizer import EOS, load_tokenizer
from curation.weights import missing_domains_error, weights_key

TRAIN_STREAM = "train_stream.bin"


@dataclass
class Document:
    tokens: np.ndarray  # the text's tokens and EOS
    source: str


def encode_documents(tokenizer: Tokenizer, texts: list[str], eos: int) -> list[np.ndarray]:
    """Token arrays, each ending in EOS; the fast batch path skips the character offsets nobody reads."""
    arrays = []
    for encoding in tokenizer.encode_batch_fast(texts):
        ids = encoding.ids  # a fresh list: appending is cheaper than a second numpy copy
        ids.append(eos)
        arrays.append(np.array(ids, dtype=TOKEN_DTYPE))
    return arrays


def tokenize_domains(filtered_dir: Path, tokenizer: Tokenizer, batch: int):
    """Documents per (domain, split): train from filtered's kept documents, val from its held-out ones; plus the
    UTF-8 bytes of each document's text."""
    eos = tokenizer.token_to_id(EOS)
    docs: dict[tuple[str, str], list[Document]] = {}
    n_bytes: dict[tuple[str, str], list[int]] = {}
    pending: list[tuple[tuple[str, str], dict]] = []

    def flush() -> None:
        arrays = encode_documents(tokenizer, [doc["text"] for _, doc in pending], eos)
        for (key, doc), tokens in zip(pending, arrays, strict=True):
            docs.setdefault(key, []).append(Document(tokens, doc.get("source", "")))
            n_bytes.setdefault(key, []).append(doc["bytes"])
        pending.clear()

    for split, folder in (("train", "kept"), ("val", HELDOUT_DIR)):
        for path in iter_document_files(filtered_dir / folder):
            for doc in read_documents(path):
                pending.append(((doc["domain"], split), doc))
                if len(pending) >= batch:
                    flush()
    flush()
    return docs, n_bytes


def repeat_documents(documents: list[Document], repeats: list[int]) -> list[Document]:
    """Each document ``repeats[i]`` times, whole (its pieces follow it); the seeded cycler spreads the copies."""
    if len(repeats) != len(documents):
        raise RuntimeError(f"rehydration counted {len(repeats)} kept documents of a domain, the mixture read "
                           f"{len(documents)}: the filtered output changed while mixing; re-materialize mixed")
    return [doc for doc, n in zip(documents, repeats, strict=True) for _ in range(n)]


def split_long(documents: list[Document], max_tokens: int) -> list[Document]:
    """Each document, or its consecutive pieces of at most ``max_tokens`` tokens (the last keeps the EOS)."""
    if max_tokens <= 0:
        return documents
    return [Document(doc.tokens[start:start + max_tokens], doc.source)
            for doc in documents for start in range(0, len(doc.tokens), max_tokens)]


class DocumentCycler:
    """A domain's training documents in a seeded order, cycled; the position carries over between phases."""

    def __init__(self, n_docs: int, rng: random.Random):
        self.order = rng.sample(range(n_docs), n_docs)
        self.taken = 0

    def peek(self) -> int:
        return self.order[self.taken % len(self.order)]

    def next(self) -> int:
        doc = self.peek()
        self.taken += 1
        return doc

    @property
    def epochs(self) -> float:
        return self.taken / len(self.order)


def interleave(lengths: dict[str, list[int]], weights: dict[str, float], total: int,
               cyclers: dict[str, DocumentCycler]) -> list[tuple[str, int]]:
    """(domain, document) picks of about ``total`` tokens, each from the domain furthest below its target."""
    realized = dict.fromkeys(weights, 0)
    picks, length = [], 0
    while length < total:
        # Weighted fair queueing: the domain whose share stays lowest once its next document is in.
        domain = min(weights, key=lambda d: ((realized[d] + lengths[d][cyclers[d].peek()]) / weights[d], d))
        doc = cyclers[domain].next()
        picks.append((domain, doc))
        realized[domain] += lengths[domain][doc]
        length += lengths[domain][doc]
    return picks


def normalized_weights(weights: dict[str, float], available: set[str], key: str = "mixture.weights") -> dict:
    """The positive weights, summing to 1; every domain they name must have training tokens."""
    active = {d: float(w) for d, w in weights.items() if w > 0}
    if not active:
        raise ValueError(f"{key} gives no domain a positive weight; domains with data: {sorted(available)}")
    missing = sorted(set(active) - available)
    if missing:
        raise missing_domains_error(key, missing, available, "training documents")
    total = sum(active.values())
    return {d: w / total for d, w in sorted(active.items())}


def temperature_weights(weights: dict[str, float], domain_tokens: dict[str, int], temperature: float) -> dict:
    """Shares proportional to tokens ** (1 / T): T = 1 keeps natural proportions, larger T flattens them."""
    powered = {d: domain_tokens[d] ** (1.0 / temperature) for d in weights}
    total = sum(powered.values())
    return {d: p / total for d, p in powered.items()}


def resolve_phases(cfg: MixtureConfig, domain_tokens: dict[str, int]) -> list[tuple[PhaseConfig, dict[str, float]]]:
    """Each phase with its normalized weights; checks names and fractions.

    Empty weights (a phase's and mixture.weights) mean every domain with training tokens, in proportion to its
    tokens: temperature 1, or mixture.temperature when set.
    """
    phases = cfg.phases or [PhaseConfig()]
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ValueError(f"mixture.phases needs distinct names, got {names}")
    if any(p.fraction <= 0 for p in phases) or abs(sum(p.fraction for p in phases) - 1) > 1e-6:
        raise ValueError(f"mixture.phases fractions must be positive and sum to 1, got {[p.fraction for p in phases]}")
    if not domain_tokens:
        raise ValueError("no domain has training documents: the filters or the held-out selection took them all")
    resolved = []
    for phase in phases:
        temperature = cfg.temperature if phase.temperature is None else phase.temperature
        if temperature < 0:
            raise ValueError(f"mixture temperature must be >= 0 (0: use the weights), got {temperature}")
        weights = phase.weights or cfg.weights
        if not weights:
            weights = temperature_weights(domain_tokens, domain_tokens, temperature or 1.0)
        else:
            weights = normalized_weights(weights, set(domain_tokens), weights_key(phase))
            if temperature > 0:
                weights = temperature_weights(weights, domain_tokens, temperature)
        resolved.append((phase, weights))
    return resolved


def source_prefixes(tokenizer: Tokenizer, template: str, train: dict[str, list[Document]]) -> dict:
    """The tokens of the source template for every training document, per domain."""
    try:
        texts = {d: [template.format(domain=d, source=doc.source) for doc in docs] for d, docs in train.items()}
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"mixture.source_template {template!r} may only use {{domain}} and {{source}}: {error}"
                         ) from None
    return {d: [np.asarray(e.ids, TOKEN_DTYPE) for e in tokenizer.encode_batch_fast(t)] for d, t in texts.items()}


def write_stream(path: Path, picks_by_phase: dict[str, list[tuple[str, int]]], train: dict[str, list[Document]],
                 prefixes: dict[str, dict[str, list[np.ndarray]]], replay_fraction: float = 0.0) -> StreamIndex:
    """Concatenate the picked documents phase by phase; write the stream and its index sidecar."""
    domains = sorted(train)
    pieces, doc_lengths, doc_domain, doc_prefix, phase_lengths = [], [], [], [], []
    for phase, picks in picks_by_phase.items():
        before = len(doc_lengths)
        for domain, doc in picks:
            prefix = prefixes[phase][domain][doc] if phase in prefixes else np.empty(0, TOKEN_DTYPE)
            pieces += [prefix, train[domain][doc].tokens]
            doc_lengths.append(len(prefix) + len(train[domain][doc].tokens))
            doc_domain.append(domains.index(domain))
            doc_prefix.append(len(prefix))
        phase_lengths.append(sum(doc_lengths[before:]))
    np.concatenate(pieces).tofile(path)
    index = StreamIndex(np.concatenate([[0], np.cumsum(doc_lengths)]), np.array(doc_domain, np.int32),
                        np.array(doc_prefix, np.int32), domains, np.concatenate([[0], np.cumsum(phase_lengths)]),
                        list(picks_by_phase), replay_fraction)
    index.save(path)
    return index


def write_shards(docs: dict[tuple[str, str], list[Document]], n_bytes: dict, out_dir: Path) -> dict:
    """shards/<domain>/<split>.bin and its index; returns documents, tokens and bytes per domain and split."""
    domains: dict[str, dict] = {}
    for (domain, split), documents in sorted(docs.items()):
        folder = out_dir / "shards" / domain
        folder.mkdir(parents=True, exist_ok=True)
        tokens = np.concatenate([doc.tokens for doc in documents])
        tokens.tofile(folder / f"{split}.bin")
        offsets = np.concatenate([[0], np.cumsum([len(doc.tokens) for doc in documents])]).astype(np.int64)
        np.savez(folder / f"{split}.index.npz", doc_offsets=offsets, doc_bytes=np.array(n_bytes[(domain, split)]))
        domains.setdefault(domain, {})[split] = {
            "documents": len(documents), "tokens": int(tokens.size), "bytes": sum(n_bytes[(domain, split)]),
        }
    return domains


def replay_weights(cfg: ReplayConfig, available: set[str]) -> dict[str, float]:
    if not 0 <= cfg.fraction < 1:
        raise ValueError(f"mixture.replay.fraction must be in [0, 1), got {cfg.fraction}")
    return normalized_weights(cfg.weights, available, "mixture.replay.weights") if cfg.fraction else {}


def pick_phases(phases: list[tuple[PhaseConfig, dict[str, float]]], lengths: dict[str, list[int]],
                prefixes: dict[str, list[np.ndarray]], conditioned: list[str], tokens: int,
                cyclers: dict[str, DocumentCycler]) -> dict[str, list[tuple[str, int]]]:
    """Each phase's documents: its fraction of ``tokens``, prefixes counted where the phase is conditioned."""
    picks, done = {}, 0.0
    for phase, weights in phases:
        phase_lengths = lengths
        if phase.name in conditioned:
            phase_lengths = {d: [n + len(p) for n, p in zip(lengths[d], prefixes[d], strict=True)] for d in lengths}
        budget = round((done + phase.fraction) * tokens) - round(done * tokens)
        picks[phase.name] = interleave(phase_lengths, weights, budget, cyclers)
        done += phase.fraction
    return picks


def build_mixture(cfg: MixtureConfig, filtered_dir: Path, tokenizer_dir: Path, out_dir: Path) -> dict:
    """Shards and streams from a ``filtered`` output (its kept and held-out documents); writes mixture.json."""
    tokenizer = load_tokenizer(tokenizer_dir)
    docs, n_bytes = tokenize_domains(filtered_dir, tokenizer, cfg.encode_batch_size)
    domains = write_shards(docs, n_bytes, out_dir)
    train = {d: documents for (d, split), documents in sorted(docs.items()) if split == "train"}
    # Natural and temperature weights count each document once, rehydrated or not.
    phases = resolve_phases(cfg, {d: sum(len(doc.tokens) for doc in documents) for d, documents in train.items()})
    rehydration = None
    if cfg.rehydration.enabled:
        repeats, rehydration = rehydration_repeats(cfg.rehydration, filtered_dir)
        train = {d: repeat_documents(documents, repeats.get(d, [])) for d, documents in train.items()}
    train = {d: split_long(documents, cfg.max_doc_tokens) for d, documents in train.items()}
    lengths = {d: [len(doc.tokens) for doc in documents] for d, documents in train.items()}
    replay = replay_weights(cfg.replay, set(train))

    rng = random.Random(cfg.seed)
    cyclers = {d: DocumentCycler(len(documents), rng) for d, documents in train.items()}
    conditioned = [phase.name for phase, _ in phases if phase.condition and cfg.source_template]
    prefixes = source_prefixes(tokenizer, cfg.source_template, train) if conditioned else {}
    main_tokens = round((1 - cfg.replay.fraction) * cfg.train_tokens)
    picks = pick_phases(phases, lengths, prefixes, conditioned, main_tokens, cyclers)
    index = write_stream(out_dir / TRAIN_STREAM, picks, train, dict.fromkeys(conditioned, prefixes),
                         cfg.replay.fraction)
    ledger = {"phases": stream_ledger(index, {phase.name: weights for phase, weights in phases})}
    if replay:
        replay_picks = interleave(lengths, replay, round(cfg.replay.fraction * cfg.train_tokens), cyclers)
        replay_index = write_stream(out_dir / REPLAY_STREAM, {"replay": replay_picks}, train, {})
        ledger["replay"] = stream_ledger(replay_index, {"replay": replay})["replay"]
    ledger["epochs"] = {d: round(cycler.epochs, 4) for d, cycler in cyclers.items()}
    # The domains that train (a positive weight in a phase or the replay): each should have held-out data.
    trained = sorted({d for _, weights in phases for d in weights} | set(replay))
    summary = {"domains": domains, "trained_domains": trained, "ledger": ledger,
               "stream_tokens": int(index.doc_offsets[-1])}
    if rehydration is not None:
        summary["rehydration"] = rehydration
    (out_dir / "mixture.json").write_text(json.dumps(summary, indent=2))
    return summary
