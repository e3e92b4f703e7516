"""What a researcher trusts about the curation outputs, as pure checks: each returns (passed, the numbers).

The Dagster asset checks (``orchestration.checks``) call these on the materialized outputs. They live apart from
the stage modules on purpose: a stage's code identity counts its modules, and a check must not re-run a stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer

from curation.documents import iter_document_files, read_documents
from curation.heldout import HELDOUT_DIR
from curation.ledger_report import ledger_sections


def heldout_texts(filtered_dir: Path) -> Iterator[str]:
    """The held-out documents' texts (``filtered``'s ``heldout/``): text the tokenizer never trained on."""
    for path in iter_document_files(filtered_dir / HELDOUT_DIR):
        for doc in read_documents(path):
            yield doc["text"]


def round_trip(tokenizer: Tokenizer, texts: Iterable[str]) -> tuple[bool, dict]:
    """Whether ``decode(encode(text)) == text`` for every text; the numbers say where the first failure parts.

    A tokenizer that changes text (a normalizer, an unknown token) trains and evaluates on text other than the
    corpus, and bits-per-byte stops meaning what it says.
    """
    checked, failures, first = 0, 0, None
    for text in texts:
        checked += 1
        decoded = tokenizer.decode(tokenizer.encode(text).ids, skip_special_tokens=False)
        if decoded == text:
            continue
        failures += 1
        if first is None:
            offset = next((i for i, (a, b) in enumerate(zip(text, decoded, strict=False)) if a != b),
                          min(len(text), len(decoded)))
            first = {"offset": offset, "text": text[offset:offset + 40], "decoded": decoded[offset:offset + 40]}
    return failures == 0, {"documents": checked, "failures": failures, **({"first_failure": first} if first else {})}


def accounted_documents(filtered_stats: dict) -> dict[str, int]:
    """Where ``filtered`` put the corpus's documents, by category, from its stats (``accounting``)."""
    return {k: v for k, v in filtered_stats["accounting"].items() if k != "corpus"}


def every_document_accounted(corpus_documents: int, accounted: dict[str, int]) -> tuple[bool, dict]:
    """Whether the categories add up to the corpus exactly: none lost, none counted twice."""
    total = sum(accounted.values())
    return total == corpus_documents, {"corpus_documents": corpus_documents, **accounted, "unaccounted":
                                       corpus_documents - total}


def shares_within_tolerance(ledger: dict, tolerance: float) -> tuple[bool, dict]:
    """Whether every domain's realized share of its phase is within ``tolerance`` (absolute) of its weight; the
    numbers name the domain that misses its weight most."""
    worst = {"worst_share_deviation": 0.0}
    for phase, section in ledger_sections(ledger).items():
        for domain, row in section["domains"].items():
            deviation = abs(row["realized_share"] - row["weight"])
            if deviation >= worst["worst_share_deviation"]:
                worst = {"worst_share_deviation": deviation, "worst_phase": phase, "worst_domain": domain,
                         "worst_weight": row["weight"], "worst_realized_share": row["realized_share"]}
    return worst["worst_share_deviation"] <= tolerance, {"tolerance": tolerance, **worst}


def rehydration_accounted(mixed_stats: dict) -> tuple[bool, dict]:
    """Whether rehydration gave every training document exactly one repeat count, and the stream's documents per
    domain are those repeats summed; passes with ``rehydration: off`` when the mixture did not rehydrate."""
    rehydration = mixed_stats.get("rehydration")
    if rehydration is None:
        return True, {"rehydration": "off"}
    unaccounted, miscounted = {}, {}
    for domain, split in mixed_stats["domains"].items():
        by_repeats = rehydration["documents_by_repeats"].get(domain, {})
        documents = split.get("train", {}).get("documents", 0)
        if sum(by_repeats.values()) != documents:
            unaccounted[domain] = documents - sum(by_repeats.values())
        repeated = sum(int(k) * n for k, n in by_repeats.items())
        if repeated != rehydration["rehydrated_documents"].get(domain, 0):
            miscounted[domain] = repeated
    numbers = {"documents": sum(rehydration["documents"].values()),
               "rehydrated_documents": sum(rehydration["rehydrated_documents"].values()),
               "upsampled_documents": sum(n for by in rehydration["documents_by_repeats"].values()
                                          for k, n in by.items() if int(k) > 1),
               "unaccounted": unaccounted, "miscounted": miscounted}
    return not unaccounted and not miscounted, numbers
