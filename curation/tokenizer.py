"""The ``tokenizer`` stage: a byte-level BPE trained with Hugging Face ``tokenizers`` on the training split.

Saved as ``tokenizer.json`` (what TorchTitan's HuggingFaceTokenizer reads) beside a ``tokenizer_config.json``
naming the special tokens. It reads only the kept documents: held-out ones (``filtered/heldout``) are never seen,
so bits-per-byte on them stays honest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from curation.config import TokenizerConfig
from curation.documents import iter_document_files, read_documents

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


def training_texts(filtered_kept: Path, cfg: TokenizerConfig) -> Iterator[str]:
    budget = cfg.max_train_bytes
    for path in iter_document_files(filtered_kept):
        for doc in read_documents(path):
            budget -= doc["bytes"]
            if budget < 0:
                return
            yield doc["text"]


def train_tokenizer(cfg: TokenizerConfig, filtered_kept: Path, out_dir: Path) -> dict:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_texts(filtered_kept, cfg), trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "add_bos_token": False}, indent=2)
    )
    return {"vocab_size": tokenizer.get_vocab_size(), "special_tokens": [BOS, EOS]}


def load_tokenizer(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
