"""Multiple-choice tasks built from the lineage's own held-out documents, as lm-evaluation-harness task files.

Nothing is downloaded: the texts are the held-out documents of a ``mixed`` output (``held_out_texts``) or any
mapping domain -> texts. Three kinds of task, each example a context and ``choices`` answers of which one is true:

    lineage_next_line_<domain>  the line that follows the context, against lines of other documents of the domain
    lineage_python_parses       the Python line that follows the context, against shuffles of its own pieces that
                                no longer parse (``ast``)
    lineage_prose_cloze         a word of a prose line with the rest of the line, against words of the same length
                                from elsewhere in the domain

Distractors come from the same text as the answers and have as many tokens, so a model that ignores the
context (an untrained one) sits at chance; a model that learned the context's continuation, Python's syntax or
English word order does better. Every draw is seeded: the same texts and config write the same bytes.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import random
import re
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from tokenizers import Tokenizer

from curation.tokenizer import EOS
from evaluation.config import DownstreamConfig

log = logging.getLogger(__name__)
TEMPLATE = Path(__file__).parent / "tasks" / "_lineage_mc_yaml"
MANIFEST = "tasks.json"
MIN_LINE_CHARS = 8  # shorter lines ("}", "else:") say too little to tell apart
WORD = re.compile(r" [A-Za-z]{4,12}(?=[ ,.;:])")  # a cloze word with its leading space, before a space or punctuation
PIECE = re.compile(r"\w+|[^\w\s]")  # the pieces a Python line is shuffled by


@dataclass
class Example:
    context: str
    choices: list[str]
    label: int  # index of the true choice


def held_out_texts(mixed_dir: Path, tokenizer: Tokenizer) -> dict[str, list[str]]:
    """The held-out documents of every domain of a ``mixed`` output, decoded (each val.bin document ends in EOS)."""
    eos = tokenizer.token_to_id(EOS)
    texts = {}
    for shard in sorted((mixed_dir / "shards").glob("*/val.bin")):
        tokens = np.fromfile(shard, dtype=np.uint32)
        documents = np.split(tokens, np.flatnonzero(tokens == eos) + 1)
        texts[shard.parent.name] = [tokenizer.decode(doc[:-1].tolist()) for doc in documents if len(doc) > 1]
    return texts


def _context(text: str, end: int, max_chars: int) -> str:
    """The text before `end`, at most `max_chars`, starting at a line start where the cut allows."""
    start = max(0, end - max_chars)
    # (not when the line before `end` is longer than the cut: the context would be empty)
    if start > 0 and (newline := text.find("\n", start, end)) != -1 and newline + 1 < end:
        start = newline + 1
    return text[start:end]


def _lines(text: str) -> list[tuple[int, str]]:
    """(offset, line) of every line of `text` long enough to be an answer, skipping the first (no context)."""
    found, offset = [], 0
    for line in text.split("\n"):
        if offset > 0 and len(line.strip()) >= MIN_LINE_CHARS:
            found.append((offset, line))
        offset += len(line) + 1
    return found


def _token_counter(tokenizer: Tokenizer) -> Callable[[str], int]:
    @functools.cache
    def count(text: str) -> int:
        return len(tokenizer.encode(text).ids)

    return count


def _distinct_draws(answer: str, pool: list[str], n: int, rng: random.Random) -> list[str] | None:
    """`n` distinct members of `pool` other than `answer`, drawn by occurrence; None if there are too few."""
    others = [p for p in pool if p.strip().lower() != answer.strip().lower()]
    if len(set(others)) < n:
        return None
    drawn: set[str] = set()
    while len(drawn) < n:
        drawn.add(rng.choice(others))
    return sorted(drawn)


def _example(rng: random.Random, context: str, answer: str, distractors: list[str]) -> Example:
    """The answer among the distractors at a random place."""
    choices = [answer, *distractors]
    rng.shuffle(choices)
    return Example(context, choices, choices.index(answer))


def next_line_examples(documents: list[str], cfg: DownstreamConfig, rng: random.Random,
                       count: Callable[[str], int]) -> list[Example]:
    """The true next line against lines of the domain's other documents of as many tokens."""
    lines = [_lines(text) for text in documents]
    examples = []
    for index, (text, own) in enumerate(zip(documents, lines, strict=True)):
        others: dict[int, list[str]] = {}
        for j, doc_lines in enumerate(lines):
            for _, line in doc_lines if j != index else []:
                others.setdefault(count(line), []).append(line)
        for offset, line in own:
            distractors = _distinct_draws(line, others.get(count(line), []), cfg.choices - 1, rng)
            if distractors:
                examples.append(_example(rng, _context(text, offset, cfg.context_chars), line, distractors))
    return examples


def _parses(line: str) -> bool:
    """Is the line a Python statement: a simple one, or a compound statement's header (given a body)?"""
    code = textwrap.dedent(line)
    for candidate in (code, code + "\n    pass"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)  # e.g. "invalid decimal literal" of a shuffle
                ast.parse(candidate)
            return True
        except (SyntaxError, ValueError):
            continue
    return False


def _broken_shuffles(line: str, n: int, rng: random.Random, count: Callable[[str], int]) -> list[str] | None:
    """`n` distinct lines with the pieces of `line` in another order and as many tokens, none of which parses;
    the spacing is kept."""
    indent = line[: len(line) - len(line.lstrip())]
    parts = re.split(f"({PIECE.pattern})", line.strip())  # text between pieces (spaces) at even places
    pieces = parts[1::2]
    variants: set[str] = set()
    for _ in range(20 * n):
        order = rng.sample(pieces, len(pieces))
        parts[1::2] = order
        variant = indent + "".join(parts)
        if variant != line and count(variant) == count(line) and not _parses(variant):
            variants.add(variant)
        if len(variants) == n:
            return sorted(variants)
    return None


def python_examples(documents: list[str], cfg: DownstreamConfig, rng: random.Random,
                    count: Callable[[str], int]) -> list[Example]:
    """A line that parses against shuffles of its pieces that do not."""
    examples = []
    for text in documents:
        for offset, line in _lines(text):
            if len(PIECE.findall(line)) < 4 or not _parses(line):
                continue
            distractors = _broken_shuffles(line, cfg.choices - 1, rng, count)
            if distractors:
                examples.append(_example(rng, _context(text, offset, cfg.context_chars), line, distractors))
    return examples


def cloze_examples(documents: list[str], cfg: DownstreamConfig, rng: random.Random,
                   count: Callable[[str], int]) -> list[Example]:
    """A word of a prose line and the rest of the line, against other words of the domain of as many tokens.

    Distractors are drawn by occurrence (a frequent word as often as it occurs), as the answers are, so knowing
    only which words are common does not help.
    """
    occurrences = [(text, match) for text in documents for match in WORD.finditer(text)]
    by_tokens: dict[int, list[str]] = {}
    for _, match in occurrences:
        by_tokens.setdefault(count(match.group()), []).append(match.group())
    examples = []
    for text, match in occurrences:
        line_end = text.find("\n", match.end())
        rest = text[match.end() : line_end if line_end != -1 else len(text)]
        word = match.group()  # with its leading space
        distractors = _distinct_draws(word, by_tokens[count(word)], cfg.choices - 1, rng)
        if not distractors:
            continue
        context = _context(text, match.start(), cfg.context_chars)
        examples.append(_example(rng, context, word + rest, [w + rest for w in distractors]))
    return examples


def task_examples(texts: dict[str, list[str]], cfg: DownstreamConfig, tokenizer: Tokenizer) -> dict[str, list[Example]]:
    """Every task's examples, at most cfg.examples_per_task each, drawn with a seed of its own."""
    count = _token_counter(tokenizer)
    makers: dict[str, tuple[Callable, list[str]]] = {
        f"lineage_next_line_{domain}": (next_line_examples, documents) for domain, documents in texts.items()
    }
    for task, domain, maker in [("lineage_python_parses", cfg.python_domain, python_examples),
                                ("lineage_prose_cloze", cfg.prose_domain, cloze_examples)]:
        if domain in texts:
            makers[task] = (maker, texts[domain])
        else:
            log.warning("downstream task %s skipped: no held-out documents of domain %r", task, domain)
    tasks = {}
    for task, (maker, documents) in sorted(makers.items()):
        rng = random.Random(f"{cfg.seed}:{task}")
        # An example needs context to condition on (lm-eval refuses an empty one): a cloze at a text's start has none.
        examples = [example for example in maker(documents, cfg, rng, count) if example.context.strip()]
        rng.shuffle(examples)
        tasks[task] = examples[: cfg.examples_per_task]
    return tasks


def build_tasks(texts: dict[str, list[str]], tokenizer: Tokenizer, out_dir: Path, cfg: DownstreamConfig) -> Path:
    """Write the tasks to `out_dir`: per task `<task>.yaml` (lm-eval's task config) and `<task>.jsonl`, and
    ``tasks.json`` (per task: examples and chance; the tasks skipped, and why). Returns `out_dir`.

    The tokenizer is the model's: a distractor has as many tokens as its answer, so that the summed log-likelihood
    has no length to go by. A task with fewer than cfg.min_examples examples is skipped with a warning naming it.
    """
    if cfg.choices < 2:
        raise ValueError(f"eval.downstream.choices is {cfg.choices}: a multiple choice needs at least 2")
    out_dir.mkdir(parents=True, exist_ok=True)
    template = yaml.safe_load(TEMPLATE.read_text())
    manifest: dict[str, dict] = {"tasks": {}, "skipped": {}}
    for task, examples in task_examples(texts, cfg, tokenizer).items():
        if len(examples) < cfg.min_examples:
            reason = f"{len(examples)} examples, fewer than eval.downstream.min_examples={cfg.min_examples}"
            log.warning("downstream task %s skipped: %s", task, reason)
            manifest["skipped"][task] = reason
            continue
        with open(out_dir / f"{task}.jsonl", "w") as f:
            f.writelines(json.dumps(asdict(example)) + "\n" for example in examples)
        # The data file is named relative to this folder, so the bytes do not depend on where it lies: lm-eval's
        # command line run in this folder finds it, and task_results names it in full.
        config = {"task": task, **template, "dataset_kwargs": {"data_files": {"test": f"{task}.jsonl"}}}
        (out_dir / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        manifest["tasks"][task] = {"n": len(examples), "chance": 1 / cfg.choices}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out_dir
