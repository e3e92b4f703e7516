"""Per-domain validation loss and bits-per-byte of a trained checkpoint, in one CPU process.

The model is the same torchtitan llama3 the trainer built; its weights come from the model entries of a DCP
checkpoint (torch.distributed.checkpoint reads it without a process group). Each domain's tokens are cut
into consecutive windows of seq_len + 1 tokens overlapping by one, so every token after the first is
predicted exactly once, from the context inside its window.
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

from evaluation.config import EvalConfig
from kernels.attention import attention_backend
from training.config import ModelConfig
from training.model import llama3_model_config


@dataclass
class ValSplit:
    tokens_path: str  # flat uint32 token file
    n_bytes: int  # UTF-8 bytes of the text those tokens encode


@dataclass
class DomainResult:
    tokens: int  # predicted tokens
    loss: float  # mean nats per predicted token
    bits_per_byte: float


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
def _sum_nats(module: nn.Module, windows: list[np.ndarray], batch_size: int) -> float:
    total = 0.0
    full = [w for w in windows if len(w) == len(windows[0])]
    rest = windows[len(full) :]  # at most one shorter tail window, run on its own
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)] + [[w] for w in rest]
    for batch in batches:
        rows = torch.from_numpy(np.stack(batch))
        logits = module(rows[:, :-1])
        total += F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten(), reduction="sum").item()
    return total


def evaluate_split(module: nn.Module, split: ValSplit, cfg: EvalConfig) -> DomainResult:
    tokens = np.memmap(split.tokens_path, dtype=np.uint32, mode="r")
    if len(tokens) < 2:
        raise ValueError(f"{split.tokens_path} holds fewer than 2 tokens")
    windows = _windows(tokens, cfg.seq_len, cfg.max_tokens_per_domain)
    n_predicted = sum(len(w) - 1 for w in windows)
    nats = _sum_nats(module, windows, cfg.batch_size)
    # When only a prefix is evaluated, its byte count is prorated by the share of tokens evaluated.
    n_bytes = split.n_bytes * n_predicted / (len(tokens) - 1)
    return DomainResult(tokens=n_predicted, loss=nats / n_predicted, bits_per_byte=nats / (math.log(2) * n_bytes))


def evaluate_checkpoint(
    checkpoint_dir: Path | None, model: ModelConfig, vocab_size: int, splits: dict[str, ValSplit], cfg: EvalConfig,
    seed: int = 0,
) -> dict[str, DomainResult]:
    """Mean token loss (nats) and bits-per-byte of the checkpoint's model (None: untrained) on each domain."""
    if cfg.seq_len > model.max_seq_len:
        raise ValueError(f"eval seq_len {cfg.seq_len} exceeds the model's max_seq_len {model.max_seq_len}")
    module = load_model(checkpoint_dir, model, vocab_size, seed)
    return {domain: evaluate_split(module, split, cfg) for domain, split in splits.items()}
