"""Downstream tasks: built deterministically from held-out texts, loadable by lm-eval offline, and fair: a model
that has learned nothing scores chance on them (while a task with a length giveaway is caught)."""

import ast
import json
import logging
import random
from pathlib import Path

import pytest
import torch.distributed.checkpoint as dcp
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from evaluation.config import DownstreamConfig
from evaluation.downstream_tasks import MANIFEST, build_tasks
from training.config import ModelConfig

pytest.importorskip("lm_eval")

WORDS = ("the model reads every line of text and learns which word comes next while the loss falls slowly "
         "over many small steps until the curve flattens near its floor").split()
NAMES = ["total", "count", "value", "index", "result", "buffer", "offset", "limit"]
MODEL = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, max_seq_len=256)
CFG = DownstreamConfig(examples_per_task=100, min_examples=20, context_chars=200, batch_size=16)


def prose(rng: random.Random) -> str:
    return "\n".join(" ".join(rng.choices(WORDS, k=rng.randint(6, 11))) + "." for _ in range(30))


def python(rng: random.Random) -> str:
    lines = []
    for _ in range(30):
        a, b, c = rng.sample(NAMES, 3)
        lines.append(rng.choice([f"{a} = {b} + {c} * {rng.randint(2, 9)}", f"{a} = max({b}, {c} - 1)",
                                 f"if {a} > {b}:", f"    {a} += len({b}[{c}:])"]))
    return "\n".join(lines)


def texts() -> dict[str, list[str]]:
    rng = random.Random(0)
    return {"docs": [prose(rng) for _ in range(6)], "python": [python(rng) for _ in range(6)],
            "lonely": [prose(rng)]}  # one document: no other document to draw next-line distractors from


def write_tokenizer(folder: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([t for docs in texts().values() for t in docs], trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_bos_token": False}))
    return tokenizer


def test_tasks_are_deterministic_and_well_formed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tokenizer = write_tokenizer(tmp_path)
    with caplog.at_level(logging.WARNING):
        first = build_tasks(texts(), tokenizer, tmp_path / "a", CFG)
    build_tasks(texts(), tokenizer, tmp_path / "b", CFG)
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in (tmp_path / "b").iterdir())
    for path in first.iterdir():
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name

    manifest = json.loads((first / MANIFEST).read_text())
    assert set(manifest["tasks"]) == {"lineage_next_line_docs", "lineage_next_line_python", "lineage_python_parses",
                                      "lineage_prose_cloze"}
    assert "lineage_next_line_lonely" in manifest["skipped"] and "lineage_next_line_lonely" in caplog.text
    for task, info in manifest["tasks"].items():
        examples = [json.loads(line) for line in (first / f"{task}.jsonl").read_text().splitlines()]
        assert len(examples) == info["n"] == CFG.examples_per_task and info["chance"] == 1 / CFG.choices
        labels = [e["label"] for e in examples]
        assert all(len(set(e["choices"])) == CFG.choices for e in examples)
        assert len(set(labels)) == CFG.choices  # the answer is not always in the same place
    for example in map(json.loads, (first / "lineage_python_parses.jsonl").read_text().splitlines()):
        parses = []
        for choice in example["choices"]:
            code = choice.strip()
            try:
                ast.parse(code if not code.endswith(":") else code + "\n    pass")
                parses.append(True)
            except SyntaxError:
                parses.append(False)
        assert parses == [i == example["label"] for i in range(CFG.choices)], example


def test_task_files_load_in_lm_eval_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval.tasks import TaskManager

    tasks_dir = build_tasks(texts(), write_tokenizer(tmp_path), tmp_path / "tasks", CFG)
    monkeypatch.chdir(tasks_dir)  # the YAMLs name their data relative to their folder, as lm-eval's CLI run there
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    assert "lineage_prose_cloze" in manager.all_tasks
    task = manager.load(["lineage_prose_cloze"])["tasks"]["lineage_prose_cloze"]
    docs = list(task.test_docs())
    assert len(docs) == CFG.examples_per_task
    first = json.loads((tasks_dir / "lineage_prose_cloze.jsonl").read_text().splitlines()[0])
    assert task.doc_to_text(docs[0]) == first["context"]
    assert task.doc_to_choice(docs[0])[task.doc_to_target(docs[0])] == first["choices"][first["label"]]


def add_giveaway_task(tasks_dir: Path) -> str:
    """A task whose answer is always the shortest choice: a model that ignores the text still finds it."""
    rng = random.Random(1)
    with open(tasks_dir / "giveaway.jsonl", "w") as f:
        for _ in range(60):
            words = rng.choices(WORDS, k=12)
            choices = [" " + " ".join(words[:3])] + [" " + " ".join(rng.sample(words, 10)) for _ in range(3)]
            f.write(json.dumps({"context": " ".join(rng.choices(WORDS, k=8)), "choices": choices, "label": 0}) + "\n")
    config = (tasks_dir / "lineage_prose_cloze.yaml").read_text().replace("lineage_prose_cloze", "giveaway")
    (tasks_dir / "giveaway.yaml").write_text(config)
    manifest = json.loads((tasks_dir / MANIFEST).read_text())
    manifest["tasks"]["giveaway"] = {"n": 60, "chance": 0.25}
    (tasks_dir / MANIFEST).write_text(json.dumps(manifest))
    return "giveaway"


def test_untrained_model_scores_chance_and_a_giveaway_is_caught(tmp_path: Path) -> None:
    from evaluation.downstream import evaluate_downstream, task_results
    from training.export import export_hf

    tasks_dir = build_tasks(texts(), write_tokenizer(tmp_path), tmp_path / "tasks", CFG)
    giveaway = add_giveaway_task(tasks_dir)
    results = evaluate_downstream(None, MODEL, tmp_path, tasks_dir, CFG, seed=3)
    assert set(results) == set(json.loads((tasks_dir / MANIFEST).read_text())["tasks"])
    for task, r in results.items():
        assert r["n"] == (60 if task == giveaway else CFG.examples_per_task) and r["chance"] == 0.25
        if task == giveaway:
            assert r["acc"] - r["chance"] > 3 * r["acc_stderr"], r  # the check below notices a task with a giveaway
        else:
            assert abs(r["acc"] - r["chance"]) < 2 * r["acc_stderr"], (task, r)

    # The same weights from a DCP checkpoint give the same numbers (the path the eval asset takes).
    from evaluation.perplexity import load_model

    vocab_size = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).get_vocab_size()
    dcp.save(load_model(None, MODEL, vocab_size, seed=3).state_dict(), checkpoint_id=str(tmp_path / "step-0"),
             no_dist=True)
    hf_dir = export_hf(tmp_path / "step-0", tmp_path, MODEL, tmp_path / "hf")
    assert task_results(hf_dir, tasks_dir, CFG) == results
