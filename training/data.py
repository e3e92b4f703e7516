"""A deterministic, resumable data loader over the packed, phased training stream of the ``mixed`` stage.

The stream is cut into windows of L + 1 tokens (L = seq_len; inputs the first L, labels the last L) and served
phase by phase in a fixed permutation (``curation.packing``). Positions restart at 0 at every row and every
document, which is how the attention backends find document boundaries; labels of source-conditioning tokens
are IGNORE_INDEX, so the model reads its source but is not trained to predict it (MeCo).

Every call serves one global micro-batch of G = dp_world_size * local_batch rows; rank r keeps rows
[r*B, (r+1)*B). Of those G rows, exactly round(replay_fraction * G), spread evenly, come from the replay stream
(``replay_stream.bin`` beside the training stream), the others from the training stream, each stream taking its
next windows in order. The state is the two window counters, the same on every rank: a checkpoint resumes
exactly, also onto another number of data-parallel ranks with the same global batch.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchtitan.components.dataloader import BaseDataLoader
from torchtitan.components.loss import IGNORE_INDEX

from curation.packing import REPLAY_STREAM, PackedStream, replay_rows


class TokenFileDataLoader(BaseDataLoader):
    @dataclass(kw_only=True, slots=True)
    class Config(BaseDataLoader.Config):
        dataset: str = "token_file"
        # dataset_path (inherited): the training stream; its index and the replay stream sit beside it

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
        self.main = PackedStream(config.dataset_path, seq_len)
        fraction = self.main.index.replay_fraction
        self.replay = PackedStream(Path(config.dataset_path).parent / REPLAY_STREAM, seq_len) if fraction else None
        is_replay = replay_rows(dp_world_size * local_batch_size, fraction)
        # Each row's place among the rows of its stream in a global batch; this rank's rows are a slice of them.
        place = np.where(is_replay, np.cumsum(is_replay) - 1, np.cumsum(~is_replay) - 1)
        mine = slice(dp_rank * local_batch_size, (dp_rank + 1) * local_batch_size)
        self.rank_is_replay, self.rank_place = is_replay[mine], place[mine]
        self.replay_per_batch = int(is_replay.sum())
        self.main_per_batch = len(is_replay) - self.replay_per_batch
        self.seq_len = seq_len
        self.windows_consumed = 0
        self.replay_windows_consumed = 0

    @property
    def n_windows(self) -> int:
        return self.main.n_windows

    @property
    def stride(self) -> int:
        """The order's stride in the first phase (the only one of a stream without phases)."""
        return self.main.phases[0].stride

    def next_batch(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rows = len(self.rank_place)
        tokens = np.empty((rows, self.seq_len + 1), np.int64)
        positions = np.empty((rows, self.seq_len), np.int64)
        no_loss = np.empty((rows, self.seq_len), bool)
        for stream, consumed, selected in ((self.main, self.windows_consumed, ~self.rank_is_replay),
                                           (self.replay, self.replay_windows_consumed, self.rank_is_replay)):
            if selected.any():
                tokens[selected], positions[selected], no_loss[selected] = stream.rows(
                    consumed + self.rank_place[selected])
        self.windows_consumed += self.main_per_batch
        self.replay_windows_consumed += self.replay_per_batch
        labels = tokens[:, 1:].copy()
        labels[no_loss] = IGNORE_INDEX
        inputs = {"input": torch.from_numpy(tokens[:, :-1].copy()), "positions": torch.from_numpy(positions)}
        return inputs, torch.from_numpy(labels)

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        # Rank-independent, so DCP may keep any one rank's copy; a resume with another data-parallel
        # degree but the same global batch continues at the same windows.
        return {"windows_consumed": self.windows_consumed, "replay_windows_consumed": self.replay_windows_consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self.windows_consumed = int(state_dict["windows_consumed"])
            self.replay_windows_consumed = int(state_dict.get("replay_windows_consumed", 0))
