"""Packed token streams: documents back to back, cut into windows of L + 1 tokens, served in a fixed order.

A stream ``<name>.bin`` (uint32 tokens) has a sidecar ``<name>.index.npz`` that keeps what packing would lose:

    doc_offsets     int64 [n_docs + 1]    token offset where each document starts (the last one: the stream length)
    doc_domain      int32 [n_docs]        index into ``domains``
    doc_prefix      int32 [n_docs]        leading source-conditioning tokens of each document (no loss on them)
    phase_offsets   int64 [n_phases + 1]  token offset where each phase starts
    domains, phases str arrays
    replay_fraction float64               share of every global batch served from ``replay_stream.bin``

A plain token file without a sidecar is one document in one phase.

Window w covers tokens [w*L, w*L + L] (inputs the first L, labels the last L); a document crossing a window edge
goes on in the next window, where its positions restart at 0, as in torchtitan's packed datasets. A window
belongs to the phase holding its first token. The k-th window served in a pass is, within the phase that order
position falls in, ``first + (k - first) * stride mod count``: a coprime stride spreads consecutive batches over
the phase while serving each of its windows exactly once, and the phases come in order. After the last window
the order starts again. Nothing here imports torch: the mixed stage and the checkpoint ledger use it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOKEN_DTYPE = np.uint32
REPLAY_STREAM = "replay_stream.bin"


def index_path(stream_path: Path) -> Path:
    return stream_path.with_suffix(".index.npz")


def coprime_stride(n: int) -> int:
    """A step near n / golden ratio that shares no factor with n, so k * step mod n visits every window once."""
    stride = max(1, round(n * 0.6180339887))
    while math.gcd(stride, n) != 1:
        stride += 1
    return stride


@dataclass
class StreamIndex:
    doc_offsets: np.ndarray
    doc_domain: np.ndarray
    doc_prefix: np.ndarray
    domains: list[str]
    phase_offsets: np.ndarray
    phases: list[str]
    replay_fraction: float = 0.0

    @classmethod
    def single_document(cls, n_tokens: int) -> StreamIndex:
        return cls(np.array([0, n_tokens]), np.zeros(1, np.int32), np.zeros(1, np.int32), ["all"],
                   np.array([0, n_tokens]), ["all"])

    @classmethod
    def load(cls, stream_path: Path, n_tokens: int) -> StreamIndex:
        path = index_path(stream_path)
        if not path.exists():
            return cls.single_document(n_tokens)
        with np.load(path) as z:
            index = cls(z["doc_offsets"], z["doc_domain"], z["doc_prefix"], z["domains"].tolist(),
                        z["phase_offsets"], z["phases"].tolist(), float(z["replay_fraction"]))
        if index.doc_offsets[-1] != n_tokens or index.phase_offsets[-1] != n_tokens:
            raise ValueError(f"{path.name} describes {index.doc_offsets[-1]} tokens but {stream_path.name} holds "
                             f"{n_tokens}: the stream and its index come from different builds; rebuild `mixed`")
        return index

    def save(self, stream_path: Path) -> None:
        np.savez(index_path(stream_path), doc_offsets=self.doc_offsets, doc_domain=self.doc_domain,
                 doc_prefix=self.doc_prefix, domains=np.array(self.domains), phase_offsets=self.phase_offsets,
                 phases=np.array(self.phases), replay_fraction=np.float64(self.replay_fraction))

    def domain_tokens(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Tokens of each domain inside the token ranges [starts, ends), summed: int64 [n_domains]."""
        lengths = np.diff(self.doc_offsets)
        starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
        totals = np.zeros(len(self.domains), np.int64)
        for d in range(len(self.domains)):
            in_domain = self.doc_domain == d
            before = np.concatenate([[0], np.cumsum(lengths * in_domain)])  # domain tokens before each document
            totals[d] = (self._tokens_before(before, in_domain, ends) - self._tokens_before(before, in_domain, starts)
                         ).sum()
        return totals

    def _tokens_before(self, before: np.ndarray, in_domain: np.ndarray, t: np.ndarray) -> np.ndarray:
        doc = np.clip(np.searchsorted(self.doc_offsets, t, side="right") - 1, 0, len(in_domain) - 1)
        return before[doc] + (t - self.doc_offsets[doc]) * in_domain[doc]


@dataclass(frozen=True)
class PhaseWindows:
    name: str
    first: int  # the phase's first window, also its first position in the serving order
    count: int
    stride: int


def phase_windows(index: StreamIndex, n_windows: int, seq_len: int, stream: str) -> list[PhaseWindows]:
    """Windows of each phase: those whose first token lies in it."""
    bounds = np.minimum(-(-index.phase_offsets // seq_len), n_windows)
    bounds[-1] = n_windows
    phases = []
    for name, first, end in zip(index.phases, bounds[:-1], bounds[1:], strict=True):
        if end <= first:
            raise ValueError(f"phase '{name}' of {stream} is shorter than one window of seq_len + 1 = {seq_len + 1} "
                             "tokens: raise mixture.train_tokens or the phase's fraction, or lower train.seq_len")
        phases.append(PhaseWindows(name, int(first), int(end - first), coprime_stride(int(end - first))))
    return phases


class PackedStream:
    """A token stream with its index, cut into windows for one seq_len; serves rows by order position."""

    def __init__(self, path: str | Path, seq_len: int):
        self.path = Path(path)
        self.tokens = np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r")
        self.seq_len = seq_len
        self.n_windows = (len(self.tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise ValueError(f"{self.path} holds fewer than seq_len + 1 = {seq_len + 1} tokens")
        self.index = StreamIndex.load(self.path, len(self.tokens))
        self.phases = phase_windows(self.index, self.n_windows, seq_len, self.path.name)
        self._firsts = np.array([p.first for p in self.phases])
        self._counts = np.array([p.count for p in self.phases])
        self._strides = np.array([p.stride for p in self.phases])

    def window_ids(self, positions: np.ndarray) -> np.ndarray:
        """The window served at each order position (positions count from the start of training)."""
        j = np.asarray(positions, np.int64) % self.n_windows
        p = np.searchsorted(self._firsts, j, side="right") - 1
        return self._firsts[p] + (j - self._firsts[p]) * self._strides[p] % self._counts[p]

    def rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokens int64 [n, L+1], positions int64 [n, L] (0 where a row or document starts), and a bool [n, L]
        mask of the labels that are source-conditioning tokens (trained without loss)."""
        starts = self.window_ids(positions) * self.seq_len
        at = starts[:, None] + np.arange(self.seq_len + 1)
        tokens = self.tokens[at].astype(np.int64)
        offsets = self.index.doc_offsets
        doc = np.searchsorted(offsets, at, side="right") - 1
        position = at[:, :-1] - np.maximum(offsets[doc[:, :-1]], starts[:, None])
        in_prefix = (at[:, 1:] - offsets[doc[:, 1:]]) < self.index.doc_prefix[doc[:, 1:]]
        return tokens, position, in_prefix

    def consumed_tokens(self, windows_consumed: int) -> dict[str, dict[str, int]]:
        """Input tokens of each domain per phase in the first ``windows_consumed`` windows served."""
        passes, rest = divmod(int(windows_consumed), self.n_windows)
        L, result = self.seq_len, {}
        for phase in self.phases:
            whole = phase.first * L, (phase.first + phase.count) * L
            tokens = passes * self.index.domain_tokens([whole[0]], [whole[1]])
            served = min(max(rest - phase.first, 0), phase.count)
            if served:
                starts = self.window_ids(np.arange(phase.first, phase.first + served)) * L
                tokens = tokens + self.index.domain_tokens(starts, starts + L)
            result[phase.name] = {d: int(n) for d, n in zip(self.index.domains, tokens, strict=True) if n}
        return result


def replay_rows(global_batch: int, fraction: float) -> np.ndarray:
    """Which rows of a global batch are replay: exactly round(fraction * G), spread evenly."""
    n = round(fraction * global_batch)
    row = np.arange(global_batch)
    return (row + 1) * n // global_batch > row * n // global_batch


def consumed_ledger(stream_path: str | Path, seq_len: int, global_batch: int, steps: int) -> dict:
    """Tokens per domain per phase (and of replay) a run has trained on after ``steps`` global batches.

    ``global_batch``: rows per loader call over all ranks (train.global_batch_size when there is no gradient
    accumulation, as in training/train.py). The counts follow the loader's deterministic order, so a checkpoint's
    ledger is exact: {"phases": {phase: {domain: tokens}}, "replay": {domain: tokens}, "tokens": n}.
    """
    stream_path = Path(stream_path)
    main = PackedStream(stream_path, seq_len)
    n_replay = int(replay_rows(global_batch, main.index.replay_fraction).sum())
    phases = main.consumed_tokens(steps * (global_batch - n_replay))
    replay: dict[str, int] = {}
    if n_replay:
        served = PackedStream(stream_path.parent / REPLAY_STREAM, seq_len).consumed_tokens(steps * n_replay)
        replay = {d: n for per_domain in served.values() for d, n in per_domain.items()}
    total = sum(n for per_domain in phases.values() for n in per_domain.values()) + sum(replay.values())
    return {"phases": phases, "replay": replay, "tokens": total}
