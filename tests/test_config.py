"""Hydra composition: defaults, overrides, and errors that name the valid choices."""

from __future__ import annotations

import pytest

from orchestration.cli import expand_sweep, main
from orchestration.compose import compose_experiment
from orchestration.config import ConfigError, ExperimentConfig


def test_default_experiment_is_the_demo() -> None:
    cfg, _ = compose_experiment([])
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.name == "demo" and cfg.corpus.source == "python_env"
    assert cfg.tokenizer.vocab_size == 4096


def test_override_and_experiment_choice() -> None:
    cfg, _ = compose_experiment(["experiment=tiny", "filter.prose.min_doc_words=7", "train.steps=3"])
    assert cfg.name == "tiny" and cfg.model.dim == 64
    assert cfg.filter.prose.min_doc_words == 7 and cfg.train.steps == 3


def test_unknown_key_names_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as error:
        compose_experiment(["filter.prose.min_words=3"])
    assert "min_words" in str(error.value) and "min_doc_words" in str(error.value)


def test_wrong_type_is_rejected() -> None:
    with pytest.raises(ConfigError, match="steps"):
        compose_experiment(["train.steps=many"])


def test_unknown_group_choice_lists_the_options() -> None:
    with pytest.raises(ConfigError) as error:
        compose_experiment(["model=gpt9"])
    assert "llama_cpu" in str(error.value) and "llama_tiny" in str(error.value)


def test_cli_reports_config_errors_without_a_traceback(capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", "tokenizer.vocab=5"]) == 2
    assert "Valid keys under 'tokenizer'" in capsys.readouterr().err


def test_sweep_expands_to_the_cross_product() -> None:
    runs = expand_sweep(["experiment=tiny", "train.lr=0.1,0.01", "mixture.seed=1,2"])
    assert len(runs) == 4
    assert ["experiment=tiny", "train.lr=0.1", "mixture.seed=2"] in runs


def test_missing_corpus_path_fails_before_anything_runs(capsys: pytest.CaptureFixture, tmp_path) -> None:
    assert main(["plan", "corpus=jsonl", f"corpus.paths=[{tmp_path}/absent/*.jsonl]"]) == 2
    assert "matches no file" in capsys.readouterr().err
