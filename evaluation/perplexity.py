"""Per-domain validation loss and bits-per-byte of a trained checkpoint, in one CPU process.

The model is the same torchtitan llama3 the trainer built; its weights come from the model entries of a DCP
checkpoint (torch.distributed.checkpoint reads it without a process group). Each domain's tokens are cut
into consecutive windows of seq_len + 1 tokens overlapping by one, so every token after the first is
predicted exactly once, from the context inside its window. Each predicted token's loss is attributed to the
held-out document that holds it (the split's index), which gives the bootstrap interval over documents
(``evaluation.bootstrap``).
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import nn

from evaluation.bootstrap import bootstrap_intervals, document_sums
from evaluation.config import EvalConfig
from kernels.attention import attention_backend
from training.config import ModelConfig
from training.model import llama3_model_config


@dataclass
class ValSplit:
    tokens_path: str  # flat uint32 token file: documents one after another
    index_path: str  # .npz: doc_offsets (n + 1 token offsets) and doc_bytes (UTF-8 bytes of each document's text)


@dataclass
class DomainResult:
    """One domain at one checkpoint; plain JSON-able values (eval.json stores ``dataclasses.asdict`` of it)."""

    tokens: int  # predicted tokens
    loss: float  # mean nats per predicted token
    bits_per_byte: float
    documents: int  # held-out documents with a predicted token: what the intervals resample
    loss_ci95: tuple[float, float]  # 95% bootstrap interval over documents
    bits_per_byte_ci95: tuple[float, float]


def list_checkpoints(output_dir: str | Path) -> dict[int, Path]:
    """Every complete DCP checkpoint <output_dir>/checkpoint/step-N, by step."""
    return {
        int(match.group(1)): path
        for path in sorted(Path(output_dir, "checkpoint").glob("step-*"))
        if (match := re.fullmatch(r"step-(\d+)", path.name)) and (path / ".metadata").is_file()
    }


def find_last_checkpoint(output_dir: str | Path) -> Path:
    """The highest <output_dir>/checkpoint/step-N that holds a complete DCP checkpoint."""
    steps = list_checkpoints(output_dir)
    if not steps:
        raise FileNotFoundError(f"no DCP checkpoint under {Path(output_dir, 'checkpoint')}")
    return steps[max(steps)]


def load_model(checkpoint_dir: Path | None, model: ModelConfig, vocab_size: int, seed: int = 0) -> nn.Module:
    """The model with the checkpoint's weights; with no checkpoint, freshly initialized (the starting point)."""
    device = torch.device("cpu")
    config = llama3_model_config(model, vocab_size, attention_backend(device))
    with torch.device("meta"):
        module = config.build()
    module.to_empty(device=device)
    torch.manual_seed(seed)
    with torch.no_grad():
        module.init_weights()  # fills the non-persistent buffers (RoPE), and the weights of an untrained model
    if checkpoint_dir is None:
        return module.eval()
    state = module.state_dict()
    # Only the model's entries are requested; optimizer, scheduler and loader state stay on disk.
    dcp.load(state, checkpoint_id=str(checkpoint_dir), no_dist=True)
    module.load_state_dict(state)
    return module.eval()


def _windows(tokens: np.ndarray, seq_len: int, max_predicted: int) -> list[np.ndarray]:
    predicted = min(len(tokens) - 1, max_predicted)
    starts = range(0, predicted, seq_len)
    return [tokens[s : min(s + seq_len, predicted) + 1].astype(np.int64) for s in starts]


@torch.no_grad()
def _token_nats(module: nn.Module, windows: list[np.ndarray], batch_size: int) -> np.ndarray:
    """The loss of every predicted token, in token order."""
    nats = []
    full = [w for w in windows if len(w) == len(windows[0])]
    rest = windows[len(full) :]  # at most one shorter tail window, run on its own
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)] + [[w] for w in rest]
    for batch in batches:
        rows = torch.from_numpy(np.stack(batch))
        logits = module(rows[:, :-1])
        losses = F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten(), reduction="none")
        nats.append(losses.numpy().astype(np.float64))
    return np.concatenate(nats)


def evaluate_split(module: nn.Module, split: ValSplit, cfg: EvalConfig) -> DomainResult:
    tokens = np.memmap(split.tokens_path, dtype=np.uint32, mode="r")
    if len(tokens) < 2:
        raise ValueError(f"{split.tokens_path} holds fewer than 2 tokens")
    with np.load(split.index_path) as index:
        doc_offsets, doc_bytes = index["doc_offsets"], index["doc_bytes"]
    if doc_offsets[-1] != len(tokens):
        raise ValueError(f"{split.index_path} does not describe {split.tokens_path}: re-materialize mixed")
    windows = _windows(tokens, cfg.seq_len, cfg.max_tokens_per_domain)
    # When only a prefix is evaluated, a document cut by it counts the share of its bytes its tokens cover.
    sums = document_sums(_token_nats(module, windows, cfg.batch_size), doc_offsets, doc_bytes)
    nats, n_predicted, n_bytes = sums.nats.sum(), int(sums.tokens.sum()), sums.bytes.sum()
    intervals = bootstrap_intervals(sums, cfg.bootstrap_samples, cfg.bootstrap_seed)
    return DomainResult(tokens=n_predicted, loss=float(nats / n_predicted),
                        bits_per_byte=float(nats / (math.log(2) * n_bytes)), documents=len(sums.nats),
                        loss_ci95=intervals.loss, bits_per_byte_ci95=intervals.bits_per_byte)


def evaluate_checkpoint(
    checkpoint_dir: Path | None, model: ModelConfig, vocab_size: int, splits: dict[str, ValSplit], cfg: EvalConfig,
    seed: int = 0,
) -> dict[str, DomainResult]:
    """Mean token loss (nats) and bits-per-byte of the checkpoint's model (None: untrained) on each domain."""
    if cfg.seq_len > model.max_seq_len:
        raise ValueError(f"eval seq_len {cfg.seq_len} exceeds the model's max_seq_len {model.max_seq_len}")
    if cfg.bootstrap_samples < 1:
        raise ValueError(f"eval.bootstrap_samples must be >= 1, got {cfg.bootstrap_samples}")
    module = load_model(checkpoint_dir, model, vocab_size, seed)
    return {domain: evaluate_split(module, split, cfg) for domain, split in splits.items()}
