"""Loader throughput against what training consumes: the loader must never be what a run waits on.

Serves global batches from a phased stream with replay (a `mixed` output given with --mixed, else a synthetic
one with realistic document lengths), with every data-parallel rank's loader built in this process, and
compares the loader's tokens/s with the training tokens/s (from a report/train_timings.json, else --train-tps).

    python bench/bench_loader.py [--mixed STORE/mixed/FP] [--train-timings CHECKPOINT/report/train_timings.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.mixture import Document, write_stream  # noqa: E402
from curation.packing import REPLAY_STREAM  # noqa: E402
from training.data import TokenFileDataLoader  # noqa: E402


def synthetic_mixed(folder: Path, tokens: int, seed: int = 0) -> Path:
    """Five domains of documents with log-normal lengths (median ~700 tokens), two phases, 10% replay."""
    rng = np.random.default_rng(seed)
    train = {}
    for d in range(5):
        lengths = np.clip(rng.lognormal(6.5, 1.0, 400), 8, 30_000).astype(int)
        train[f"d{d}"] = [Document(rng.integers(2, 4096, n).astype(np.uint32), "") for n in lengths]
    order = [(f"d{i % 5}", i // 5 % 400) for i in range(tokens // 700)]
    cut = int(0.8 * len(order))
    path = folder / "train_stream.bin"
    write_stream(path, {"stable": order[:cut], "cooldown": order[cut:]}, train, {}, replay_fraction=0.1)
    write_stream(folder / REPLAY_STREAM, {"replay": order[: len(order) // 9]}, train, {})
    return path


def tokens_per_second(path: Path, seq_len: int, global_batch: int, ranks: int, steps: int) -> float:
    config = TokenFileDataLoader.Config(dataset_path=str(path))
    loaders = [config.build(dp_world_size=ranks, dp_rank=r, seq_len=seq_len, local_batch_size=global_batch // ranks)
               for r in range(ranks)]
    start = time.perf_counter()
    for _ in range(steps):
        for loader in loaders:
            loader.next_batch()
    return steps * global_batch * seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixed", type=Path, help="a `mixed` output folder (default: a synthetic stream)")
    parser.add_argument("--train-timings", type=Path,
                        help="report/train_timings.json of a run (its tokens_per_second)")
    parser.add_argument("--train-tps", type=float, default=8800.0, help="training tokens/s (CPU demo, two ranks)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    train_tps = args.train_tps
    if args.train_timings:
        train_tps = json.loads(args.train_timings.read_text())["tokens_per_second"]
    with tempfile.TemporaryDirectory() as scratch:
        path = args.mixed / "train_stream.bin" if args.mixed else synthetic_mixed(Path(scratch), 3_000_000)
        runs = [tokens_per_second(path, args.seq_len, args.global_batch, args.ranks, args.steps)
                for _ in range(args.repeats)]
    loader_tps = statistics.median(runs)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"shape: seq_len {args.seq_len}, global batch {args.global_batch} over {args.ranks} ranks, "
          f"{args.steps} steps x {args.repeats} repeats, stream {'given' if args.mixed else 'synthetic'}")
    print(f"loader   median {loader_tps:12,.0f} tokens/s  (runs: {', '.join(f'{r:,.0f}' for r in runs)})")
    print(f"training          {train_tps:12,.0f} tokens/s")
    print(f"ratio    {loader_tps / train_tps:.1f}x  (target >= 10x)")


if __name__ == "__main__":
    main()
