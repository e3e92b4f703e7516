"""Held-out data worth trusting: chosen per domain before the filters, with minimums; bootstrap intervals over it.

The last test builds the demo's curation stages (corpus, filtered, tokenizer, mixed) on the embedded corpus through
the library functions, as the assets call them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from curation.config import DedupConfig, FilterConfig, HeldoutConfig
from curation.corpus import build_corpus
from curation.documents import DOCUMENTS_FILE, iter_document_files, make_document, read_documents, write_documents
from curation.filters import build_filtered
from curation.heldout import choose_heldout, heldout_rank, selection_stats, token_shortfalls
from curation.mixture import build_mixture
from curation.tokenizer import train_tokenizer
from evaluation.bootstrap import DocumentSums, bootstrap_intervals, document_sums
from evaluation.config import EvalConfig
from evaluation.perplexity import ValSplit, _token_nats, _windows, evaluate_split
from evaluation.validation import validation_splits
from orchestration.compose import compose_experiment


def corpus(domain: str, n: int, n_bytes: int = 1000) -> list[tuple[str, str, int]]:
    return [(f"{domain}-{i}", domain, n_bytes) for i in range(n)]


def test_held_out_documents_meet_the_fraction_and_the_minimums_in_hash_order() -> None:
    cfg = HeldoutConfig(fraction=0.1, min_documents=5, min_tokens=3000, bytes_per_token=2.0, max_fraction=0.5)
    docs = corpus("big", 200) + corpus("long", 40, n_bytes=500)
    chosen = choose_heldout(docs, cfg)
    assert len(chosen["big"].ids) == 20  # the fraction wins: 10% of 200 > 5 documents, 20 x 500 tokens > 3000
    assert len(chosen["long"].ids) == 12  # the tokens win: 12 x 250 estimated tokens = 3000
    assert chosen["long"].estimated_tokens == 3000 and chosen["long"].bytes == 6000
    ranked = sorted((heldout_rank(doc_id), doc_id) for doc_id, domain, _ in docs if domain == "big")
    assert chosen["big"].ids == [doc_id for _, doc_id in ranked[:20]]  # the lowest ranks, in rank order
    assert choose_heldout(reversed(docs), cfg) == chosen  # the input order decides nothing
    assert selection_stats(chosen, cfg)["held_out_warnings"] == []


def test_a_domain_that_cannot_meet_the_minimum_is_named() -> None:
    cfg = HeldoutConfig(fraction=0.05, min_documents=20, min_tokens=0)
    chosen = choose_heldout(corpus("python", 400) + corpus("license", 10) + corpus("single", 1), cfg)
    assert len(chosen["python"].ids) == 20 and len(chosen["license"].ids) == 5  # capped at max_fraction 0.5
    assert chosen["single"].ids == []  # one document: holding it out would leave nothing to train
    warnings = selection_stats(chosen, cfg)["held_out_warnings"]
    assert len(warnings) == 2
    assert "'license' holds 5 documents" in warnings[0] and "10 corpus documents" in warnings[0]
    assert "'single' has NO held-out documents" in warnings[1]

    # The mixed stage checks the real token counts of the domains that train.
    domains = {"python": {"train": {}, "val": {"documents": 20, "tokens": 900}}, "license": {"train": {}}}
    real = token_shortfalls(domains, ["license", "python"], HeldoutConfig(min_documents=20, min_tokens=1000))
    assert real[0].startswith("held-out data: domain 'license' has NO held-out documents")
    assert "'python' holds 20 documents and 900 tokens" in real[1]
    with pytest.raises(ValueError, match="max_fraction"):
        choose_heldout(corpus("x", 3), HeldoutConfig(fraction=0.6))


def test_held_out_documents_skip_the_filters_and_their_copies_do_not_train(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{n}" for n in rng.integers(0, 10_000, 60)) for _ in range(8)]
    # Every text twice, under two sources: whichever copy is held out, the other must not train.
    documents = [make_document(text, "notes", f"{copy}/{i}.txt") for i, text in enumerate(texts) for copy in "ab"]
    (tmp_path / "corpus").mkdir()
    write_documents(tmp_path / "corpus" / DOCUMENTS_FILE, documents)
    cfg = FilterConfig(domain_rules={"notes": []}, dedup=DedupConfig(near=False),
                       heldout=HeldoutConfig(fraction=0, min_documents=2, min_tokens=0))
    stats = build_filtered(cfg, tmp_path / "corpus", tmp_path / "out")

    def read(folder: str) -> list[dict]:
        return [doc for path in iter_document_files(tmp_path / "out" / folder) for doc in read_documents(path)]

    held, kept, rejected = read("heldout"), read("kept"), read("rejected")
    assert [doc["id"] for doc in held] == choose_heldout([(d["id"], "notes", 0) for d in documents],
                                                         cfg.heldout)["notes"].ids
    held_texts = {doc["text"] for doc in held}
    assert not held_texts & {doc["text"] for doc in kept}
    assert sorted(doc["filter_rule"] for doc in rejected if doc["text"] in held_texts) == ["decontaminated"] * 2
    assert stats["accounting"] == {"corpus": 16, "kept": 6, "rejected": 8, "quarantined": 0, "held_out": 2}


def test_the_old_validation_fraction_key_sets_the_held_out_fraction() -> None:
    cfg, _ = compose_experiment(["experiment=demo", "validation_fraction=0.2"])
    assert cfg.filter.heldout.fraction == 0.2
    assert compose_experiment(["experiment=demo"])[0].filter.heldout == HeldoutConfig()


def test_losses_are_attributed_to_the_document_of_the_predicted_token() -> None:
    offsets = np.array([0, 3, 4, 8])  # documents of 3, 1 and 4 tokens; position 0 is never predicted
    nats = np.arange(1.0, 8.0)  # positions 1..7
    sums = document_sums(nats, offsets, np.array([40, 10, 80]))
    assert sums.nats.tolist() == [1 + 2, 3, 4 + 5 + 6 + 7] and sums.tokens.tolist() == [2, 1, 4]
    assert sums.bytes.tolist() == [40, 10, 80]
    prefix = document_sums(nats[:5], offsets, np.array([40, 10, 80]))  # the evaluated prefix ends in document 3
    assert prefix.tokens.tolist() == [2, 1, 2] and prefix.bytes.tolist() == [40, 10, 40]


def sums_of(rng: np.random.Generator, n_docs: int) -> DocumentSums:
    tokens = rng.integers(50, 500, n_docs)
    nats = tokens * rng.normal(3.0, 0.5, n_docs)  # each document its own difficulty
    return DocumentSums(nats, tokens, tokens * 3.2)


def test_bootstrap_is_deterministic_contains_the_estimate_and_shrinks_with_documents() -> None:
    few = sums_of(np.random.default_rng(0), 20)
    first, again = bootstrap_intervals(few, 1000, seed=0), bootstrap_intervals(few, 1000, seed=0)
    assert first == again
    assert bootstrap_intervals(few, 1000, seed=1) != first  # the seed is what makes it repeatable
    loss = few.nats.sum() / few.tokens.sum()
    bpb = few.nats.sum() / (math.log(2) * few.bytes.sum())
    assert first.loss[0] < loss < first.loss[1]
    assert first.bits_per_byte[0] < bpb < first.bits_per_byte[1]
    many = bootstrap_intervals(sums_of(np.random.default_rng(0), 2000), 1000, seed=0)
    width = first.loss[1] - first.loss[0]
    # The width falls as 1 / sqrt(documents): 10x narrower for 100x the documents, within sampling noise.
    assert 0.05 * width < many.loss[1] - many.loss[0] < 0.2 * width
    same = bootstrap_intervals(DocumentSums(np.full(30, 300.0), np.full(30, 100), np.full(30, 320.0)), 200, 0)
    assert same.loss == pytest.approx((3.0, 3.0))  # documents that agree leave no doubt


class Bigram(nn.Module):
    """Logits from the current token alone, so each predicted token's loss is known without any window."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table(tokens)


def test_evaluation_attributes_every_window_token_to_its_document(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module, rng = Bigram(16).eval(), np.random.default_rng(0)
    lengths = rng.integers(1, 30, 12)
    tokens = rng.integers(0, 16, lengths.sum()).astype(np.uint32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens.tofile(tmp_path / "val.bin")
    np.savez(tmp_path / "val.index.npz", doc_offsets=offsets, doc_bytes=lengths * 3)
    split = ValSplit(str(tmp_path / "val.bin"), str(tmp_path / "val.index.npz"))
    with torch.no_grad():
        log_probs = torch.log_softmax(module.table.weight, dim=-1).numpy().astype(np.float64)
    expected = -log_probs[tokens[:-1], tokens[1:]]  # position p predicted from token p - 1
    windows = _windows(tokens, seq_len=7, max_predicted=10_000)  # windows end inside documents
    assert np.allclose(_token_nats(module, windows, batch_size=3), expected, atol=1e-5)

    result = evaluate_split(module, split, EvalConfig(seq_len=7, batch_size=3, bootstrap_samples=500))
    assert result.documents == 12 and result.tokens == len(tokens) - 1
    assert result.loss == pytest.approx(expected.mean(), rel=1e-5)
    assert result.bits_per_byte == pytest.approx(expected.sum() / (math.log(2) * lengths.sum() * 3), rel=1e-5)
    assert result.loss_ci95[0] < result.loss < result.loss_ci95[1]
    assert evaluate_split(module, split, EvalConfig(seq_len=7, batch_size=3, bootstrap_samples=500)) == result


def test_demo_curation_holds_out_every_training_domain(tmp_path: Path) -> None:
    """The demo's corpus, filtered, tokenizer and mixed stages: every training domain, license included, has
    held-out documents and tokens above the minimums, and every corpus document is accounted for."""
    cfg, _ = compose_experiment(["experiment=demo"])
    build_corpus(cfg.corpus, tmp_path / "corpus")
    stats = build_filtered(cfg.filter, tmp_path / "corpus", tmp_path / "filtered")
    counts = stats["accounting"]
    assert counts["corpus"] == counts["kept"] + counts["rejected"] + counts["quarantined"] + counts["held_out"]
    assert stats["held_out_warnings"] == []
    train_tokenizer(cfg.tokenizer, tmp_path / "filtered" / "kept", tmp_path / "tokenizer")
    (tmp_path / "mixed").mkdir()
    summary = build_mixture(cfg.mixture, tmp_path / "filtered", tmp_path / "tokenizer", tmp_path / "mixed")

    minimum = cfg.filter.heldout
    assert set(summary["trained_domains"]) == {d for d, w in cfg.mixture.weights.items() if w > 0}
    assert "license" in summary["trained_domains"]
    for domain in summary["trained_domains"]:
        val = summary["domains"][domain]["val"]
        assert val["documents"] >= minimum.min_documents and val["tokens"] >= minimum.min_tokens, domain
        assert summary["domains"][domain]["train"]["documents"] > 0, domain
    assert token_shortfalls(summary["domains"], summary["trained_domains"], minimum) == []
    splits = validation_splits(tmp_path / "mixed")
    assert set(splits) >= set(summary["trained_domains"])
    for domain, split in splits.items():
        with np.load(split.index_path) as index:
            assert index["doc_offsets"][-1] == summary["domains"][domain]["val"]["tokens"]
            assert len(index["doc_bytes"]) == summary["domains"][domain]["val"]["documents"]
