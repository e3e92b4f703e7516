"""A deterministic, resumable data loader over one flat uint32 token file.

The file is the already-mixed training stream, cut into windows of L + 1 tokens (L = seq_len; inputs are the
first L, labels the last L). The k-th window served is window (k * stride) mod n: a fixed permutation that
spreads consecutive batches over the whole stream, so one long document does not fill several batches in a row,
while each pass still serves every window exactly once (the mixture's shares hold per pass).
Every call takes the next dp_world_size * local_batch windows (one micro-batch of the global batch); rank r
keeps rows [r*B, (r+1)*B) of it. The only state is the number of windows consumed so far, the same on every
rank; it is saved in the DCP checkpoint, so a resumed run continues with exactly the next window. After the
last window of a pass the order starts again.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchtitan.components.dataloader import BaseDataLoader


def coprime_stride(n: int) -> int:
    """A step near n / golden ratio that shares no factor with n, so k * step mod n visits every window once."""
    stride = max(1, round(n * 0.6180339887))
    while math.gcd(stride, n) != 1:
        stride += 1
    return stride


class TokenFileDataLoader(BaseDataLoader):
    @dataclass(kw_only=True, slots=True)
    class Config(BaseDataLoader.Config):
        dataset: str = "token_file"
        # dataset_path (inherited): the uint32 token file

    def __init__(
        self,
        config: Config,
        *,
        dp_world_size: int,
        dp_rank: int,
        seq_len: int,
        local_batch_size: int,
        **unused: Any,  # the Trainer also passes its tokenizer and a snapshot interval; our state is exact
    ):
        if config.dataset_path is None:
            raise ValueError("TokenFileDataLoader needs dataloader.dataset_path (the token file)")
        self.tokens = np.memmap(config.dataset_path, dtype=np.uint32, mode="r")
        self.n_windows = (len(self.tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise ValueError(f"{config.dataset_path} holds fewer than seq_len + 1 = {seq_len + 1} tokens")
        self.stride = coprime_stride(self.n_windows)
        self.seq_len = seq_len
        self.local_batch_size = local_batch_size
        self.dp_world_size = dp_world_size
        self.dp_rank = dp_rank
        self.windows_consumed = 0

    def _window(self, k: int) -> np.ndarray:
        start = (k * self.stride % self.n_windows) * self.seq_len
        return self.tokens[start : start + self.seq_len + 1]

    def next_batch(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        first = self.windows_consumed + self.dp_rank * self.local_batch_size
        rows = np.stack([self._window(first + i) for i in range(self.local_batch_size)]).astype(np.int64)
        self.windows_consumed += self.dp_world_size * self.local_batch_size
        batch = torch.from_numpy(rows)
        # One document per window for now: positions restart at 0 in every row only. RoPE reads them, and
        # the masked attention backends (varlen, flex) build their masks from them; SDPA is plain causal.
        positions = torch.arange(self.seq_len).expand(self.local_batch_size, -1).contiguous()
        return {"input": batch[:, :-1], "positions": positions}, batch[:, 1:]

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        # Rank-independent, so DCP may keep any one rank's copy; a resume with another data-parallel
        # degree but the same global batch continues at the same window.
        return {"windows_consumed": self.windows_consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self.windows_consumed = int(state_dict["windows_consumed"])
