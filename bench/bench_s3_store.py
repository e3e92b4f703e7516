"""The store on S3 against the local store: the tiny lineage's wall time, and token-shard reads against training.

Starts its own moto_server on 127.0.0.1 (an S3 API in one Python process, no network: it measures the store's own
overhead, not a real bucket's latency or bandwidth). Two parts, each with its sides interleaved:

- ``lineage``: ``lab materialize experiment=tiny`` on a fresh lab home, local store against LAB_STORE_URL=s3://...
  (same machine, same commands, sides alternating), wall time of the whole command.
- ``shards``: a token stream (a `mixed` output's train_stream.bin with --stream, else a synthetic one) read from the
  bucket two ways: staged (the whole object downloaded, as the store's cache does) and window by window (one ranged
  GET per training row of seq_len + 1 tokens, as reading straight from S3 would), against the tokens/s training
  consumes (--train-tps, default the CPU demo's 8,800).

    python bench/bench_s3_store.py [--part lineage|shards|both] [--repeats 2] [--stream PATH] [--train-tps N]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_loader import synthetic_mixed  # noqa: E402


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    return server, f"http://127.0.0.1:{port}"


def bucket(name: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)


def lineage_seconds(home: Path, store_url: str) -> float:
    env = {**os.environ, "LAB_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("LAB_STORE_URL", None)
    if store_url:
        env["LAB_STORE_URL"] = store_url
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "orchestration.cli", "materialize", "experiment=tiny"], env=env,
                            cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-2000:])
    return time.perf_counter() - start


def content_hashes(home: Path) -> dict[str, str]:
    """Each lineage stage's content hash, from the local store or the object store's cache (it holds every output
    here). The `report` stage is left out: its bytes differ between any two runs (they name MLflow runs)."""
    from orchestration.lineage import STAGE_BY_NAME

    manifests = [*home.glob("store/*/*/manifest.json"), *home.glob("cache/store/*/*/manifest.json")]
    return {m.parts[-3]: json.loads(m.read_text())["content_hash"] for m in manifests
            if m.parts[-3] in STAGE_BY_NAME and not m.parts[-2].startswith(".")}


def bench_lineage(repeats: int, scratch: Path) -> None:
    times: dict[str, list[float]] = {"local": [], "s3": []}
    hashes: dict[str, dict[str, str]] = {}
    for repeat in range(repeats):
        sides = ["local", "s3"] if repeat % 2 == 0 else ["s3", "local"]
        for side in sides:
            name = f"lineage-{repeat}-{side}"
            if side == "s3":
                bucket(name)
            times[side].append(lineage_seconds(scratch / name, f"s3://{name}/lab" if side == "s3" else ""))
            hashes[name] = content_hashes(scratch / name)
            print(f"  {side}: {times[side][-1]:.1f} s", flush=True)
    first = next(iter(hashes.values()))
    differ = sorted({stage for h in hashes.values() for stage in first if h.get(stage) != first[stage]})
    print(f"content hashes of the lineage's stages differing between runs: {differ or 'none'}")
    local, s3 = statistics.median(times["local"]), statistics.median(times["s3"])
    paired = statistics.median(b / a for a, b in zip(times["local"], times["s3"], strict=True))
    print(f"tiny lineage, median of {repeats}: local {local:.1f} s, s3 {s3:.1f} s, ratio s3/local {s3 / local:.2f} "
          f"(median of paired ratios {paired:.2f})")


def bench_shards(stream: Path | None, train_tps: float, repeats: int, scratch: Path) -> None:
    import fsspec

    path = stream or synthetic_mixed(scratch, tokens=4_000_000)
    bucket("shards")
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.put_file(str(path), "shards/train_stream.bin")
    size, seq_len = path.stat().st_size, 256
    tokens = size // 4  # uint32 tokens
    row = (seq_len + 1) * 4
    starts = np.random.default_rng(0).integers(0, size - row, 400) // 4 * 4
    staged, ranged = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fs.get_file("shards/train_stream.bin", str(scratch / "staged.bin"))
        staged.append(tokens / (time.perf_counter() - start))
        start = time.perf_counter()
        for offset in starts:
            fs.cat_file("shards/train_stream.bin", start=int(offset), end=int(offset) + row)
        ranged.append(len(starts) * seq_len / (time.perf_counter() - start))
    print(f"stream {size / 1e6:.1f} MB ({tokens:,} tokens), training consumes {train_tps:,.0f} tokens/s")
    for name, values in (("staged (whole object)", staged), ("ranged GET per row", ranged)):
        median = statistics.median(values)
        print(f"  {name}: {median:,.0f} tokens/s, {median / train_tps:,.1f}x training")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("lineage", "shards", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stream", type=Path, help="a train_stream.bin (default: a synthetic 4M-token stream)")
    parser.add_argument("--train-tps", type=float, default=8800.0, help="training tokens/s (CPU demo, two ranks)")
    args = parser.parse_args()
    server, endpoint = start_moto()
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            if args.part in ("shards", "both"):
                bench_shards(args.stream, args.train_tps, max(args.repeats, 3), Path(scratch))
            if args.part in ("lineage", "both"):
                bench_lineage(args.repeats, Path(scratch))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
