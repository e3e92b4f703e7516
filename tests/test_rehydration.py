"""Dedup-aware rebalancing (``mixture.rehydration``): repeat counts from bucket pass rates, the stream they give,
shares, stats and config errors.

The filtered output is written by hand (kept and rejected sets with known duplicate clusters), so every number
below is known in advance; the tokenizer is trained on it in a second.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from curation.config import MixtureConfig, RehydrationConfig, TokenizerConfig
from curation.invariants import rehydration_accounted
from curation.mixture import TRAIN_STREAM, build_mixture
from curation.packing import StreamIndex
from curation.rehydration import repeat_count
from curation.tokenizer import train_tokenizer
from orchestration.compose import compose_experiment
from orchestration.store import content_hash

WORDS = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud field light").split()


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 60))) + "\n"


def write(folder: Path, docs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "00000.jsonl", "a") as out:
        for doc in docs:
            out.write(json.dumps({**doc, "id": str(hash(doc["text"])), "bytes": len(doc["text"].encode())}) + "\n")


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """web: 30 singletons kept and 30 removed by a quality rule, 15 pairs kept (the copy removed as an exact
    duplicate), 4 clusters of 5 copies all removed by a quality rule; code: 20 singletons kept.

    web's pass rate is (30 + 30) / 110; the pairs always pass (repeats 2), singletons pass less than average
    (repeats 1), the clusters of 5 never pass (repeats 1).
    """
    root = tmp_path_factory.mktemp("rehydration")
    rng = random.Random(0)
    filtered = root / "filtered"
    singles = [{"text": text(rng), "domain": "web"} for _ in range(30)]
    pairs = [{"text": text(rng), "domain": "web"} for _ in range(15)]
    code = [{"text": text(rng), "domain": "code"} for _ in range(20)]
    write(filtered / "kept", singles + pairs + code)
    write(filtered / "rejected" / "exact_duplicate", [{**doc, "filter_rule": "exact_duplicate"} for doc in pairs])
    failed = [{"text": text(rng), "domain": "web"} for _ in range(30)]
    failed += [doc for doc in ({"text": text(rng), "domain": "web"} for _ in range(4)) for _ in range(5)]
    write(filtered / "rejected" / "gopher_quality", [{**doc, "filter_rule": "gopher_quality"} for doc in failed])
    write(filtered / "heldout", [{"text": text(rng), "domain": d} for d in ("web", "code")])
    train_tokenizer(TokenizerConfig(vocab_size=300), filtered / "kept", root / "tokenizer")
    return filtered


def mix(filtered: Path, out: Path, **overrides) -> dict:
    cfg = MixtureConfig(**{"weights": {"web": 0.7, "code": 0.3}, "train_tokens": 20_000, **overrides})
    out.mkdir(parents=True)
    return build_mixture(cfg, filtered, filtered.parent / "tokenizer", out)


def rehydrated(**fields) -> RehydrationConfig:
    return RehydrationConfig(enabled=True, **fields)


def test_repeat_count_from_pass_rates() -> None:
    cfg = RehydrationConfig(max_repeats=8, min_bucket_documents=10)
    assert repeat_count(cfg, edge=1, documents=100, passed=100, domain_rate=0.5) == 1  # singletons never repeat
    assert repeat_count(cfg, edge=2, documents=100, passed=100, domain_rate=0.5) == 2  # always passes: its size
    assert repeat_count(cfg, edge=5, documents=100, passed=50, domain_rate=0.5) == 1  # passes as the average
    assert repeat_count(cfg, edge=5, documents=100, passed=30, domain_rate=0.5) == 1  # passes less often
    assert repeat_count(cfg, edge=5, documents=100, passed=75, domain_rate=0.5) == 3  # halfway: 1 + 4 * 0.5
    assert repeat_count(cfg, edge=100, documents=100, passed=100, domain_rate=0.5) == 8  # capped
    assert repeat_count(cfg, edge=5, documents=9, passed=9, domain_rate=0.5) == 1  # too few to measure
    assert repeat_count(cfg, edge=5, documents=10, passed=10, domain_rate=1.0) == 5  # no filter signal: size
    pinned = RehydrationConfig(fixed_repeats={100: 1})
    assert repeat_count(pinned, edge=100, documents=500, passed=500, domain_rate=0.2) == 1


def test_bucket_table_and_repeated_documents(filtered: Path, tmp_path: Path) -> None:
    summary = mix(filtered, tmp_path / "mixed", rehydration=rehydrated())
    stats = summary["rehydration"]
    web = {row["bucket"]: row for row in stats["buckets"]["web"]}
    assert (web["1"]["documents"], web["1"]["passed"], web["1"]["kept"]) == (60, 30, 30)
    assert (web["2"]["documents"], web["2"]["passed"], web["2"]["pass_rate"], web["2"]["repeats"]) == (30, 30, 1.0, 2)
    assert (web["5-99"]["documents"], web["5-99"]["passed"], web["5-99"]["repeats"]) == (20, 0, 1)
    assert web["1"]["domain_pass_rate"] == round(60 / 110, 4) and web["1"]["repeats"] == 1
    assert stats["documents_by_repeats"] == {"web": {"1": 30, "2": 15}, "code": {"1": 20}}
    assert stats["rehydrated_documents"] == {"web": 60, "code": 20}
    assert json.loads((tmp_path / "mixed" / "mixture.json").read_text())["rehydration"] == stats
    assert rehydration_accounted(summary) == (True, {"documents": 65, "rehydrated_documents": 80,
                                                     "upsampled_documents": 15, "unaccounted": {},
                                                     "miscounted": {}})
    broken = {**summary, "rehydration": {**stats, "documents_by_repeats": {"web": {"2": 15}, "code": {"1": 20}}}}
    assert rehydration_accounted(broken)[1]["unaccounted"] == {"web": 30}


def test_one_pass_repeats_each_document_by_its_bucket(filtered: Path, tmp_path: Path) -> None:
    """A stream of exactly one pass over web's rehydrated order holds each pair's document twice, others once."""
    mix(filtered, tmp_path / "probe", weights={"web": 1.0})  # for the web documents' tokens (shards/)
    mixed = tmp_path / "probe"
    with np.load(mixed / "shards" / "web" / "train.index.npz") as index:
        offsets = index["doc_offsets"]
    train = np.fromfile(mixed / "shards" / "web" / "train.bin", np.uint32)
    docs = [train[a:b].tobytes() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    one_pass = sum(len(d) // 4 for d in docs) + sum(len(d) // 4 for d in docs[30:])  # the pairs' kept copies twice
    out = mix(filtered, tmp_path / "pass", weights={"web": 1.0}, train_tokens=one_pass, rehydration=rehydrated())
    stream = np.fromfile(tmp_path / "pass" / TRAIN_STREAM, np.uint32)
    index = StreamIndex.load(tmp_path / "pass" / TRAIN_STREAM, len(stream))
    seen = Counter(stream[a:b].tobytes() for a, b in zip(index.doc_offsets[:-1], index.doc_offsets[1:], strict=True))
    assert out["stream_tokens"] == one_pass
    assert [seen[d] for d in docs] == [1] * 30 + [2] * 15  # kept order: singletons, then the pairs


def test_deterministic_and_shares_kept(filtered: Path, tmp_path: Path) -> None:
    on = mix(filtered, tmp_path / "a", rehydration=rehydrated())
    mix(filtered, tmp_path / "b", rehydration=rehydrated())
    assert content_hash(tmp_path / "a") == content_hash(tmp_path / "b")
    off = mix(filtered, tmp_path / "off")
    for section in (on["ledger"]["phases"]["main"], off["ledger"]["phases"]["main"]):
        for row in section["domains"].values():
            assert abs(row["realized_share"] - row["weight"]) < 0.02
    assert "rehydration" not in off and "rehydration" not in json.loads((tmp_path / "off" / "mixture.json").read_text())
    assert (tmp_path / "a" / TRAIN_STREAM).read_bytes() != (tmp_path / "off" / TRAIN_STREAM).read_bytes()
    # Natural proportions count each document once: rehydration leaves the resolved weights alone.
    natural_on = mix(filtered, tmp_path / "natural_on", weights={}, rehydration=rehydrated())
    natural_off = mix(filtered, tmp_path / "natural_off", weights={})
    weights = [{d: row["weight"] for d, row in s["ledger"]["phases"]["main"]["domains"].items()}
               for s in (natural_on, natural_off)]
    assert weights[0] == weights[1]


def test_no_upsampling_gives_the_stream_of_rehydration_off(filtered: Path, tmp_path: Path) -> None:
    mix(filtered, tmp_path / "ones", rehydration=rehydrated(min_bucket_documents=1000))
    mix(filtered, tmp_path / "off")
    for name in (TRAIN_STREAM, "train_stream.index.npz"):
        assert (tmp_path / "ones" / name).read_bytes() == (tmp_path / "off" / name).read_bytes()


@pytest.mark.parametrize(("fields", "message"), [
    ({"max_repeats": -1}, "max_repeats must be >= 1"),
    ({"fixed_repeats": {7: 2}}, "not bucket edges"),
    ({"fixed_repeats": {100: 9}}, r"\[1, max_repeats=8\]"),
    ({"buckets": [2, 5]}, "must start at 1 and increase"),
    ({"buckets": [1, 5, 5]}, "must start at 1 and increase"),
    ({"min_bucket_documents": 0}, "min_bucket_documents must be >= 1"),
])
def test_bad_config_fails_when_built(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RehydrationConfig(**fields)


def test_bad_config_fails_at_compose_before_any_stage() -> None:
    with pytest.raises(ValueError, match="max_repeats must be >= 1"):
        compose_experiment(["mixture.rehydration.max_repeats=-1"])
    with pytest.raises(ValueError, match=r"names buckets \[7\]"):
        compose_experiment(["mixture=demo_rehydrated", "mixture.rehydration.fixed_repeats={7: 1}"])
    cfg, _ = compose_experiment(["mixture=demo_rehydrated"])
    assert cfg.mixture.rehydration.enabled and cfg.mixture.weights["python"] == 0.4  # the demo's shares
