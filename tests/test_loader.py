"""The packed, phased loader with replay: positions, labels, row shares, order, exact resume across ranks, ledger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchtitan.components.loss import IGNORE_INDEX

from curation.mixture import Document, write_stream
from curation.packing import REPLAY_STREAM, StreamIndex, consumed_ledger
from training.data import TokenFileDataLoader

SEQ_LEN, GLOBAL_BATCH, REPLAY_FRACTION = 16, 8, 0.25
EOS = 1


def documents(domain_id: int, n_docs: int, base: int, seed: int) -> list[Document]:
    """Documents of 3..40 tokens whose values name their domain (base + 100 * domain), so rows can be traced."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        body = base + 100 * domain_id + rng.integers(2, 100, rng.integers(3, 40))
        docs.append(Document(np.append(body, EOS).astype(np.uint32), f"file{i}"))
    return docs


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    """Two phases (the second with 2-token source prefixes on every document) and a replay stream."""
    train = {"a": documents(0, 30, 1000, 0), "b": documents(1, 30, 1000, 1), "old": documents(2, 30, 5000, 2)}
    prefixes = {"tail": {d: [np.array([7, 8], np.uint32)] * len(docs) for d, docs in train.items()}}
    picks = {"head": [("a", i) for i in range(20)] + [("b", i) for i in range(10)],
             "tail": [("b", i) for i in range(30)]}
    path = tmp_path / "train_stream.bin"
    write_stream(path, picks, train, prefixes, REPLAY_FRACTION)
    write_stream(tmp_path / REPLAY_STREAM, {"replay": [("old", i) for i in range(30)]}, train, {})
    return path


def loaders(path: Path, world: int) -> list[TokenFileDataLoader]:
    config = TokenFileDataLoader.Config(dataset_path=str(path))
    return [config.build(dp_world_size=world, dp_rank=rank, seq_len=SEQ_LEN, local_batch_size=GLOBAL_BATCH // world,
                         tokenizer=None, snapshot_every_n_steps=None) for rank in range(world)]


def global_batch(ranks: list[TokenFileDataLoader]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    parts = [rank.next_batch() for rank in ranks]
    return tuple(torch.cat(column) for column in zip(*[(i["input"], i["positions"], lab) for i, lab in parts],
                                                     strict=True))


def test_positions_restart_per_document_and_labels_are_next_tokens(stream: Path) -> None:
    (inputs, labels), = [ranks.next_batch() for ranks in loaders(stream, 1)]
    tokens, positions = inputs["input"], inputs["positions"]
    assert (positions[:, 0] == 0).all() and int(positions.max()) < SEQ_LEN
    after_eos = torch.zeros_like(positions, dtype=torch.bool)
    after_eos[:, 1:] = tokens[:, :-1] == EOS
    assert ((positions == 0)[:, 1:] == after_eos[:, 1:]).all()  # a document starts right after each EOS
    steps = positions[:, 1:] - positions[:, :-1]
    assert ((steps == 1) | (positions[:, 1:] == 0)).all()
    trained = labels != IGNORE_INDEX
    assert (labels[:, :-1][trained[:, :-1]] == tokens[:, 1:][trained[:, :-1]]).all()


def test_source_prefix_labels_carry_no_loss(stream: Path) -> None:
    loader = loaders(stream, 1)[0]
    loader.windows_consumed = loader.main.phases[1].first + 1  # inside the conditioned phase
    inputs, labels = loader.next_batch()
    tokens, masked = inputs["input"], labels == IGNORE_INDEX
    assert masked.any()
    # Masked labels are exactly the prefix tokens 7, 8 that follow an EOS (or open the row's first document).
    prefix_next = (tokens[:, 1:] == 7) | (tokens[:, 1:] == 8)
    assert (masked[:, :-1] == prefix_next).all()


def test_replay_takes_exactly_its_rows_of_every_global_batch(stream: Path) -> None:
    ranks = loaders(stream, 2)
    for _ in range(12):
        tokens, _, _ = global_batch(ranks)
        from_replay = (tokens >= 5000).any(dim=1)
        assert int(from_replay.sum()) == round(REPLAY_FRACTION * GLOBAL_BATCH)
        assert not (tokens[from_replay] < 5000).logical_and(tokens[from_replay] > 100).any()


def test_phases_are_served_in_order_each_window_once(stream: Path) -> None:
    loader = loaders(stream, 1)[0]
    head = loader.main.phases[0]
    served = loader.main.window_ids(np.arange(loader.n_windows))
    assert sorted(served) == list(range(loader.n_windows))
    assert sorted(served[: head.count]) == list(range(head.count))  # phase one first, all of it


@pytest.mark.parametrize("before,after", [(1, 1), (2, 4), (4, 1), (1, 2)])
def test_resume_onto_any_number_of_ranks_is_exact(stream: Path, before: int, after: int) -> None:
    reference = loaders(stream, 1)
    expected = [global_batch(reference) for _ in range(25)]  # past the end of both streams
    first = loaders(stream, before)
    served = [global_batch(first) for _ in range(5)]
    state = first[before - 1].state_dict()
    resumed = loaders(stream, after)
    for rank in resumed:
        rank.load_state_dict(state)
    served += [global_batch(resumed) for _ in range(20)]
    for got, want in zip(served, expected, strict=True):
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)


def test_consumed_ledger_counts_what_the_loader_served(stream: Path) -> None:
    loader = loaders(stream, 1)[0]
    n_batches = 9  # past the end of the first phase
    index = StreamIndex.load(stream, len(np.fromfile(stream, np.uint32)))
    names = {0: "a", 1: "b", 2: "old"}
    counted: dict[str, dict[str, int]] = {}
    for _ in range(n_batches):
        positions = loader.windows_consumed + np.arange(loader.main_per_batch)
        for w in loader.main.window_ids(positions):
            phase = next(p.name for p in loader.main.phases if p.first <= w < p.first + p.count)
            doc = np.searchsorted(index.doc_offsets, np.arange(w * SEQ_LEN, (w + 1) * SEQ_LEN), side="right") - 1
            for d, n in zip(*np.unique(index.doc_domain[doc], return_counts=True), strict=True):
                counted.setdefault(phase, {}).setdefault(names[int(d)], 0)
                counted[phase][names[int(d)]] += int(n)
        loader.next_batch()
    ledger = consumed_ledger(stream, SEQ_LEN, GLOBAL_BATCH, n_batches)
    assert {p: d for p, d in ledger["phases"].items() if d} == counted
    assert sum(ledger["replay"].values()) == loader.state_dict()["replay_windows_consumed"] * SEQ_LEN
    assert ledger["tokens"] == n_batches * GLOBAL_BATCH * SEQ_LEN


def test_stream_without_index_is_one_document(tmp_path: Path) -> None:
    path = tmp_path / "plain.bin"
    np.arange(100, dtype=np.uint32).tofile(path)
    inputs, labels = loaders(path, 1)[0].next_batch()
    assert (inputs["positions"] == torch.arange(SEQ_LEN)).all()
    assert (labels == inputs["input"] + 1).all()


def test_index_of_another_build_is_refused(stream: Path) -> None:
    np.fromfile(stream, np.uint32)[:-5].tofile(stream)
    with pytest.raises(ValueError, match="different builds"):
        loaders(stream, 1)


def test_phase_shorter_than_a_window_is_refused(stream: Path) -> None:
    config = TokenFileDataLoader.Config(dataset_path=str(stream))
    with pytest.raises(ValueError, match="shorter than one window"):
        # One window for the whole stream: the second phase gets none.
        seq_len = len(np.fromfile(stream, np.uint32)) - 1
        TokenFileDataLoader(config, dp_world_size=1, dp_rank=0, seq_len=seq_len, local_batch_size=1)
