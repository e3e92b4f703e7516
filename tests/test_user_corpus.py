"""A user corpus without the demo's domains: weights on the command line replace the defaults, no weights mix by
token counts, and a weight for a domain without documents fails at plan time, before any stage runs."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from curation.config import TokenizerConfig
from curation.corpus import build_corpus
from curation.documents import DOCUMENTS_FILE
from curation.mixture import build_mixture
from curation.tokenizer import train_tokenizer
from orchestration import mixture_checks
from orchestration.cli import main
from orchestration.compose import compose_experiment
from orchestration.config import ConfigError
from orchestration.mixture_checks import check_mixture_domains
from orchestration.store import Manifest

WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()


@pytest.fixture()
def user_corpus(tmp_path: Path) -> Path:
    """Domains a (60 longer documents) and b (20 shorter ones): about 6:1 in tokens."""
    rng = random.Random(0)
    lines = [{"id": f"{domain}{i}", "domain": domain, "text": " ".join(rng.choices(WORDS, k=words))}
             for domain, count, words in (("a", 60, 120), ("b", 20, 60)) for i in range(count)]
    path = tmp_path / "user.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def jsonl_overrides(path: Path) -> list[str]:
    return ["corpus=jsonl", f"corpus.paths=[{path}]"]


def test_a_mapping_replaces_the_default_weights() -> None:
    cfg, _ = compose_experiment(["mixture.weights={python: 0.5, docs: 0.5}"])
    assert cfg.mixture.weights == {"python": 0.5, "docs": 0.5}
    replay, _ = compose_experiment(["mixture=demo_replay", "+mixture.replay.weights={python: 1.0}"])
    assert replay.mixture.replay.weights == {"python": 1.0}
    phased, _ = compose_experiment(["mixture=demo_phased", "mixture.phases.1.weights={docs: 1}"])
    assert [phase.weights for phase in phased.mixture.phases] == [{}, {"docs": 1.0}]


def test_one_key_changes_alone_and_a_section_mapping_sets_only_its_fields() -> None:
    default = compose_experiment([])[0].mixture
    cfg, _ = compose_experiment(["mixture.weights.docs=0.3"])
    assert cfg.mixture.weights == {**default.weights, "docs": 0.3}
    cfg, _ = compose_experiment(["mixture.replay={fraction: 0.2, weights: {docs: 1}}"])
    assert (cfg.mixture.replay.fraction, cfg.mixture.replay.weights) == (0.2, {"docs": 1.0})
    assert cfg.mixture.weights == default.weights and cfg.mixture.train_tokens == default.train_tokens


def test_mapping_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="mixture.weights.a"):
        compose_experiment(["mixture.weights={a: many}"])
    with pytest.raises(ConfigError, match="Did you mean: 'weights'"):
        compose_experiment(["mixture.weightz={a: 1}"])
    with pytest.raises(ConfigError, match="sets the whole of mixture.weights"):
        compose_experiment(["mixture.weights={a: 1}", "+mixture.weights.b=1"])


DEMO = {"python": 0.4, "code": 0.15, "docs": 0.25, "license": 0.05, "data": 0.15}


@pytest.mark.parametrize("experiment,weights,replay", [
    ("demo", DEMO, {}),
    ("wsd_branch", DEMO, {}),
    ("tiny", {"python": 0.5, "code": 0.0, "docs": 0.3, "license": 0.2, "data": 0.0}, {}),
    ("cpt_docs", {"python": 0.0, "code": 0.0, "docs": 1.0, "license": 0.0, "data": 0.0},
     {"python": 0.5, "code": 0.3, "data": 0.2}),
])
def test_experiments_on_the_embedded_corpus_keep_their_weights(experiment: str, weights: dict, replay: dict) -> None:
    cfg, _ = compose_experiment([f"experiment={experiment}"])
    assert list(cfg.mixture.weights.items()) == list(weights.items())  # the order enters no hash, but is unchanged
    assert cfg.mixture.replay.weights == replay


@pytest.mark.parametrize("source", ["jsonl", "parquet"])
def test_a_user_corpus_composes_with_empty_weights(source: str) -> None:
    cfg, _ = compose_experiment([f"corpus={source}"])
    assert cfg.mixture.weights == {} and cfg.mixture.train_tokens == compose_experiment([])[0].mixture.train_tokens


def test_no_weights_mix_by_token_counts(user_corpus: Path, tmp_path: Path) -> None:
    cfg, _ = compose_experiment([*jsonl_overrides(user_corpus), "mixture.train_tokens=20000"])
    build_corpus(cfg.corpus, tmp_path / "corpus")
    (tmp_path / "kept").mkdir()
    shutil.copy(tmp_path / "corpus" / DOCUMENTS_FILE, tmp_path / "kept")
    train_tokenizer(TokenizerConfig(vocab_size=300), tmp_path / "kept", tmp_path / "tok")
    summary = build_mixture(cfg.mixture, tmp_path, tmp_path / "tok", tmp_path / "mixed")
    tokens = {domain: splits["train"]["tokens"] for domain, splits in summary["domains"].items()}
    assert set(tokens) == {"a", "b"}
    for domain, row in summary["ledger"]["phases"]["main"]["domains"].items():
        assert row["weight"] == pytest.approx(tokens[domain] / sum(tokens.values()))
        assert row["realized_share"] == pytest.approx(row["weight"], abs=0.02)


def test_plan_refuses_a_weight_for_a_missing_domain(user_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "lab"))
    assert main(["materialize", *jsonl_overrides(user_corpus), "mixture.weights={a: 0.5, c: 0.5}"]) == 2
    error = capsys.readouterr().err
    assert "['c']" in error and "['a', 'b']" in error and "mixture.weights={a: 1, b: 1}" in error
    assert not list((tmp_path / "lab").rglob("manifest.json"))  # no stage ran
    assert main(["plan", *jsonl_overrides(user_corpus), "mixture.weights={a: 0.5, b: 0.5}"]) == 0


def manifest(stage: str, stats: dict) -> Manifest:
    return Manifest(stage, "fp", "hash", "code", {}, {}, stats)


def test_the_check_uses_what_the_lineage_knows(user_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _ = compose_experiment([*jsonl_overrides(user_corpus), "mixture.weights={a: 1, b: 1}"])
    corpus = manifest("corpus", {"domains": {"a": {"documents": 5}, "b": {"documents": 2}}})
    check_mixture_domains(cfg, corpus)
    with pytest.raises(ValueError, match=r"no documents kept by the filter: \['b'\]"):
        check_mixture_domains(cfg, corpus, manifest("filtered", {"kept_by_domain": {"a": 4}}))
    # A source too large to read at plan time is checked once `corpus` is materialized.
    monkeypatch.setattr(mixture_checks, "SCAN_LIMIT_BYTES", 10)
    cfg.mixture.weights = {"c": 1.0}
    check_mixture_domains(cfg, None)
    with pytest.raises(ValueError, match=r"\['c'\]"):
        check_mixture_domains(cfg, corpus)
    # The embedded corpus: the domains its caps allow documents for.
    tiny, _ = compose_experiment(["experiment=tiny", "mixture.weights={python: 1, code: 1}"])
    with pytest.raises(ValueError, match=r"allowed by corpus.domains: \['code'\]"):
        check_mixture_domains(tiny, None)
