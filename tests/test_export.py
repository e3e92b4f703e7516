"""Hugging Face export: a DCP checkpoint of our model loads in transformers and gives the same logits."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from training.config import ModelConfig
from training.export import export_hf
from training.model import llama3_model_config

transformers = pytest.importorskip("transformers")

# Grouped-query attention, a non-default RoPE base and an FFN multiplier: every mapping the export makes matters.
MODEL = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, ffn_dim_multiplier=1.3,
                    rope_theta=500000.0, max_seq_len=64)


def write_tokenizer(folder: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>", "<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the cat sat on the mat and then the dog ran"] * 20, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|bos|>", "eos_token": "<|eos|>"}))
    return tokenizer


def random_checkpoint(folder: Path, vocab_size: int) -> torch.nn.Module:
    with torch.device("meta"):
        model = llama3_model_config(MODEL, vocab_size, attention="sdpa").build()
    model.to_empty(device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        model.init_weights()
        for norm in [m for m in model.modules() if isinstance(m, torch.nn.RMSNorm)]:
            norm.weight.uniform_(0.5, 1.5)  # norms initialise to ones: make their mapping observable
    dcp.save(model.state_dict(), checkpoint_id=str(folder), no_dist=True)
    return model.eval()


def test_export_loads_in_transformers_with_the_same_logits(tmp_path: Path) -> None:
    tokenizer = write_tokenizer(tmp_path)
    ours = random_checkpoint(tmp_path / "step-1", tokenizer.get_vocab_size())
    out = export_hf(tmp_path / "step-1", tmp_path, MODEL, tmp_path / "hf")

    hf = transformers.LlamaForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32).eval()
    tokens = torch.randint(0, tokenizer.get_vocab_size(), (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = ours(tokens), hf(tokens).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    text = "the dog sat on the cat"
    assert hf_tokenizer(text)["input_ids"] == tokenizer.encode(text).ids
    assert hf.config.eos_token_id == tokenizer.token_to_id("<|eos|>")


def test_export_needs_a_complete_checkpoint(tmp_path: Path) -> None:
    write_tokenizer(tmp_path)
    (tmp_path / "step-3").mkdir()
    with pytest.raises(FileNotFoundError, match="step-N"):
        export_hf(tmp_path / "step-3", tmp_path, MODEL, tmp_path / "hf")
