"""The asset checks' pure functions (curation.invariants, training.invariants): each passes and fails."""

from __future__ import annotations

import math

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from curation.invariants import accounted_documents, every_document_accounted, round_trip, shares_within_tolerance
from training.invariants import loss_finite_and_fell

TEXTS = ["def Parse(x):\n    return x  # héllo\n", "The Quick brown fox.\n\tTabs, ünïcode, emoji \U0001f600."]


def byte_level_bpe() -> Tokenizer:
    """A byte-level BPE as the tokenizer stage trains one (curation.tokenizer), on a few lines."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(["def parse(x): return x", "the quick brown fox"] * 20, trainer=trainer)
    return tokenizer


def test_round_trip_passes_for_byte_level_bpe_and_fails_with_a_normalizer() -> None:
    tokenizer = byte_level_bpe()
    assert round_trip(tokenizer, TEXTS) == (True, {"documents": 2, "failures": 0})
    tokenizer.normalizer = normalizers.Lowercase()  # changes the text it encodes
    passed, numbers = round_trip(tokenizer, TEXTS)
    assert not passed and numbers["failures"] == 2
    assert numbers["first_failure"] == {"offset": 4, "text": TEXTS[0][4:44], "decoded": TEXTS[0][4:44].lower()}


def test_every_document_is_accounted_for() -> None:
    stats = {"accounting": {"corpus": 100, "kept": 90, "rejected": 9, "quarantined": 0, "held_out": 1}}
    assert accounted_documents(stats) == {"kept": 90, "rejected": 9, "quarantined": 0, "held_out": 1}
    assert every_document_accounted(100, accounted_documents(stats)) == (
        True, {"corpus_documents": 100, "kept": 90, "rejected": 9, "quarantined": 0, "held_out": 1,
               "unaccounted": 0})
    passed, numbers = every_document_accounted(101, accounted_documents(stats))
    assert not passed and numbers["unaccounted"] == 1


def ledger(realized: float) -> dict:
    row = {"weight": 0.3, "target_tokens": 300, "realized_tokens": round(1000 * realized), "realized_share": realized}
    other = {"weight": 0.7, "target_tokens": 700, "realized_tokens": round(1000 * (1 - realized)),
             "realized_share": 1 - realized}
    return {"phases": {"main": {"tokens": 1000, "domains": {"docs": row, "python": other}}}}


def test_ledger_shares_within_tolerance() -> None:
    passed, numbers = shares_within_tolerance(ledger(0.32), tolerance=0.05)
    assert passed and math.isclose(numbers["worst_share_deviation"], 0.02)
    passed, numbers = shares_within_tolerance(ledger(0.4), tolerance=0.05)
    assert not passed and math.isclose(numbers["worst_share_deviation"], 0.1)
    assert numbers["worst_phase"] == "main" and numbers["worst_domain"] in ("docs", "python")


def test_loss_finite_and_fell() -> None:
    finite, fell, numbers = loss_finite_and_fell({0: 6.2, 10: 4.0, 20: 3.1})
    assert finite and fell and (numbers["first_loss"], numbers["final_loss"]) == (6.2, 3.1)
    finite, fell, numbers = loss_finite_and_fell({0: 6.2, 10: math.nan, 20: math.inf})
    assert not finite and not fell and numbers["nonfinite_steps"] == [10, 20]
    assert loss_finite_and_fell({0: 6.2, 10: 6.3})[:2] == (True, False)  # finite, but did not fall
    assert loss_finite_and_fell({})[:2] == (False, False)  # nothing logged: nothing to trust
