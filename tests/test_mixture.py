"""Mixtures on the real embedded corpus: phases, temperature, replay and source conditioning, against the ledger.

One module fixture runs the library stages (corpus, filters without near dedup, tokenizer) on a small slice of
the Python installation, then builds a phased mixture with replay and a conditioned first phase.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from curation.config import CorpusConfig, DedupConfig, DomainCap, FilterConfig, TokenizerConfig
from curation.corpus import build_corpus
from curation.filters import build_filtered
from curation.ledger_report import ledger_plot
from curation.mixture import (
    Document,
    DocumentCycler,
    MixtureConfig,
    PhaseConfig,
    ReplayConfig,
    build_mixture,
    interleave,
    resolve_phases,
    split_long,
)
from curation.packing import REPLAY_STREAM, PackedStream, StreamIndex
from curation.tokenizer import EOS, load_tokenizer, train_tokenizer

DOMAINS = ("python", "code", "license", "data")  # prose docs under the size cap rarely pass the filters
TEMPLATE = "source: {domain}/{source}\n"
SEQ_LEN = 256


def phased_config(**overrides) -> MixtureConfig:
    return MixtureConfig(
        weights={"python": 0.6, "data": 0.4},
        phases=[PhaseConfig(name="main", fraction=0.8),
                PhaseConfig(name="cooldown", fraction=0.2, weights={"python": 0.3, "data": 0.7}, condition=False)],
        replay=ReplayConfig(fraction=0.15, weights={"license": 1, "code": 1}),
        source_template=TEMPLATE, train_tokens=800_000, max_doc_tokens=0, **overrides,
    )


@dataclass
class Built:
    root: Path
    out: Path
    summary: dict


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("demo")
    caps = {d: DomainCap(max_docs=60 if d in DOMAINS else 0, max_bytes=300_000) for d in (*DOMAINS, "docs")}
    # Documents under 6 KB: the realized shares are within one document of their targets, which must stay under
    # the 2-point tolerance below in the smallest section (the cooldown's 136k tokens).
    build_corpus(CorpusConfig(domains=caps, max_doc_bytes=6_000), root / "corpus")
    build_filtered(FilterConfig(dedup=DedupConfig(near=False)), root / "corpus", root / "filtered")
    train_tokenizer(TokenizerConfig(vocab_size=1024), root / "filtered" / "kept", root / "tokenizer")
    out = root / "mixed"
    out.mkdir()
    summary = build_mixture(phased_config(), root / "filtered", root / "tokenizer", out)
    return Built(root, out, summary)


def test_ledger_meets_targets_per_phase_and_replay(built: Built) -> None:
    ledger = built.summary["ledger"]
    assert list(ledger["phases"]) == ["main", "cooldown"]
    sections = {**ledger["phases"], "replay": ledger["replay"]}
    for name, section in sections.items():
        assert sum(row["realized_tokens"] for row in section["domains"].values()) == section["tokens"], name
        for domain, row in section["domains"].items():
            assert abs(row["realized_share"] - row["weight"]) < 0.02, (name, domain, row)
    main, cooldown, replay = (sections[n]["tokens"] for n in ("main", "cooldown", "replay"))
    assert cooldown / (main + cooldown) == pytest.approx(0.2, abs=0.01)
    assert replay / (main + cooldown + replay) == pytest.approx(0.15, abs=0.01)
    assert ledger_plot(ledger, built.root / "ledger.png").stat().st_size > 10_000
    assert json.loads((built.out / "mixture.json").read_text())["ledger"] == ledger


def test_loader_order_realizes_the_targets(built: Built) -> None:
    """One pass of the loader's window order (windows counted whole, by phase) meets every phase's targets."""
    main = PackedStream(built.out / "train_stream.bin", SEQ_LEN)
    replay = PackedStream(built.out / REPLAY_STREAM, SEQ_LEN)
    served = {**main.consumed_tokens(main.n_windows), **replay.consumed_tokens(replay.n_windows)}
    targets = {**built.summary["ledger"]["phases"], "replay": built.summary["ledger"]["replay"]}
    assert served.keys() == targets.keys()
    for name, tokens in served.items():
        total = sum(tokens.values())
        for domain, row in targets[name]["domains"].items():
            assert abs(tokens[domain] / total - row["weight"]) < 0.02, (name, domain)


def test_documents_are_whole_and_conditioned_only_in_their_phase(built: Built) -> None:
    tokenizer = load_tokenizer(built.root / "tokenizer")
    eos = tokenizer.token_to_id(EOS)
    stream = built.out / "train_stream.bin"
    tokens = np.fromfile(stream, np.uint32)
    index = StreamIndex.load(stream, len(tokens))
    ends = index.doc_offsets[1:] - 1
    assert (tokens[ends] == eos).all() and (tokens == eos).sum() == len(ends)  # one EOS per document, at its end
    cooldown_start = index.phase_offsets[1]
    first_main, first_cooldown = 0, int(np.searchsorted(index.doc_offsets, cooldown_start))
    main_text = tokenizer.decode(tokens[: index.doc_offsets[1]].tolist())
    domain = index.domains[index.doc_domain[first_main]]
    assert main_text.startswith(f"source: {domain}/") and index.doc_prefix[first_main] > 0
    assert (index.doc_prefix[first_cooldown:] == 0).all() and (index.doc_prefix[:first_cooldown] > 0).all()
    shard = np.fromfile(built.out / "shards" / domain / "train.bin", np.uint32).tobytes()
    body = tokens[index.doc_prefix[first_main]: index.doc_offsets[1]].tobytes()
    assert body in shard  # the document itself, unchanged after its prefix


def test_a_long_document_cannot_hold_its_domain_back() -> None:
    """A domain whose next document alone exceeds a small budget gets its share once long documents are pieces."""
    rng = np.random.default_rng(0)
    big = [Document(np.arange(40_000, dtype=np.uint32), "big.json")]
    small = [Document(rng.integers(0, 99, 300, dtype=np.uint32), f"s{i}.json") for i in range(200)]
    pieces = split_long(big, 1000)
    assert [len(p.tokens) for p in pieces] == [1000] * 40
    assert np.concatenate([p.tokens for p in pieces]).tolist() == list(range(40_000))  # consecutive, nothing lost

    def data_share(data_docs: list[Document]) -> float:
        lengths = {"data": [len(d.tokens) for d in data_docs], "code": [len(d.tokens) for d in small]}
        # Fresh cyclers with seed 1 put the big document first in the data domain's order.
        cyclers = {"data": DocumentCycler(len(data_docs), random.Random(1)),
                   "code": DocumentCycler(len(small), random.Random(1))}
        cyclers["data"].order.sort(key=lambda i: -lengths["data"][i])
        picks = interleave(lengths, {"data": 0.3, "code": 0.7}, 20_000, cyclers)
        total = sum(lengths[d][i] for d, i in picks)
        return sum(lengths[d][i] for d, i in picks if d == "data") / total

    assert data_share([*big, *small]) < 0.05  # whole: the 40k-token file blocks its domain
    assert abs(data_share(split_long([*big, *small], 1000)) - 0.3) < 0.02


def test_temperature_flattens_natural_shares() -> None:
    tokens = {"big": 9_000, "small": 1_000}
    natural = resolve_phases(MixtureConfig(weights={"big": 1, "small": 1}, temperature=1.0), tokens)[0][1]
    assert natural == pytest.approx({"big": 0.9, "small": 0.1})
    flat = resolve_phases(MixtureConfig(weights={"big": 1, "small": 1}, temperature=2.0), tokens)[0][1]
    assert flat == pytest.approx({"big": 0.75, "small": 0.25})  # 3:1, the square roots of 9:1
    phase = PhaseConfig(temperature=0.0, weights={"small": 1, "big": 3})
    assert resolve_phases(MixtureConfig(temperature=2.0, phases=[phase]), tokens)[0][1] == {"big": 0.75, "small": 0.25}


@pytest.mark.parametrize("config,message", [
    (MixtureConfig(weights={"python": 1}, phases=[PhaseConfig(fraction=0.5)]), "sum to 1"),
    (MixtureConfig(weights={"python": 1}, phases=[PhaseConfig(), PhaseConfig()]), "distinct names"),
    (MixtureConfig(weights={"fortran": 1}), "no training documents"),
    (MixtureConfig(weights={"python": 1}, source_template="{url}"), "may only use"),
    (MixtureConfig(weights={"python": 1}, replay=ReplayConfig(fraction=0.1)), "replay.weights"),
])
def test_bad_mixtures_name_the_fix(built: Built, tmp_path: Path, config: MixtureConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_mixture(config, built.root / "filtered", built.root / "tokenizer", tmp_path)
