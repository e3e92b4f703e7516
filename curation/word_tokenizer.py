"""A regex word tokenizer for datatrove's Gopher rules and MinHash shingles, in place of its default spaCy one.

Measured on the demo corpus (docs + license, 498 documents, 3.5 MB): spaCy's English tokenizer took 7.5 s of the
8.7 s that datatrove's word splitting costs, and it runs twice per prose document (Gopher quality, then MinHash
shingles), so it was most of the ``filtered`` stage. Gopher's and FineWeb's rules only count words, their lengths
and their alphabetic characters, and MinHash compares word n-grams of text already stripped of punctuation: a
regex split gives them nearly the same answers at a ninth of the cost (docs/benchmarks.md has the numbers and the
agreement). ``filter.word_tokenizer=spacy`` restores datatrove's default.
datatrove takes a ``WordTokenizer`` instance wherever it takes a language, so this plugs in at that seam.
"""

from __future__ import annotations

import re

from datatrove.utils.word_tokenizers import WordTokenizer

# spaCy-like: split on whitespace, then peel quotes, brackets, separators and a final period off as their own
# tokens (96% of Gopher decisions on the demo prose agree with spaCy's; plain whitespace split: 94%).
PEELED = "\"'“”‘’()\\[\\]{}<>,;:!?"
WORDS = re.compile(rf"[^\s{PEELED}]+(?<!\.)|[{PEELED}.]")
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


class RegexWordTokenizer(WordTokenizer):
    """Whitespace-separated chunks, with quotes, brackets, separators and a final period split off."""

    def __init__(self) -> None:
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return WORDS.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [sentence for sentence in SENTENCE_END.split(text.strip()) if sentence]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for sentence in self.sent_tokenize(text):
            start = text.index(sentence, start)
            spans.append((start, start + len(sentence)))
            start += len(sentence)
        return spans


TOKENIZERS = ("regex", "spacy")


def word_tokenizer(name: str) -> str | WordTokenizer:
    """What datatrove's ``language`` arguments get: our tokenizer, or the language code that selects spaCy."""
    if name not in TOKENIZERS:
        raise ValueError(f"filter.word_tokenizer='{name}' is not known; valid: {', '.join(TOKENIZERS)}")
    return RegexWordTokenizer() if name == "regex" else "en"
