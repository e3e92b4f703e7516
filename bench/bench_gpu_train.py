"""Training throughput and MFU of a ~1B llama3 on one GPU, per attention kernel.

    python bench/bench_gpu_train.py [--backends flash sdpa_efficient sdpa_cudnn sdpa_math] [--doc-len 0]

The model is ours (training.model: torchtitan's llama3 blocks with kernels.attention), AdamW, bf16 autocast over
float32 weights, each block compiled with torch.compile as torchtitan does. "flash" is flash-attn's varlen kernel
where the package is installed, else PyTorch's built-in flash SDPA kernel (printed). Every backend is compiled
and warmed up first; then the backends take turns, `--repeats` rounds of `--steps` timed steps each, and the
medians are compared with the first backend. MFU is torchtitan's: its FLOPs per token of the model config
(causal attention counted in full) over the GPU's bf16 peak (torchtitan's table). `--doc-len N` packs documents
of about N tokens into each row and masks attention per document (SDPA's flash and cudnn kernels take no mask).
On a machine without CUDA it prints a message and exits.
"""

import argparse
import dataclasses
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from kernels.attention import BACKENDS, DocumentMask, flash_attn_installed
from training.config import ModelConfig
from training.model import DocumentAttention, llama3_model_config
from training.tracking import peak_flops

# Llama-3.2-1B's shape (dim 2048, 16 layers, 32 query / 8 key-value heads, FFN 8192) with a 32k vocabulary.
MODEL = ModelConfig(
    dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, multiple_of=256, ffn_dim_multiplier=1.5, max_seq_len=2048
)
VOCAB = 32_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--doc-len", type=int, default=0, help="mean packed document length; 0: one per row")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per backend per round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--no-compile", action="store_true")
    return parser.parse_args()


def resolve(backend: str) -> str:
    if backend == "flash":
        return "flash_varlen" if flash_attn_installed() else "sdpa_flash"
    if backend not in BACKENDS:
        sys.exit(f"unknown backend {backend!r}; choose flash or one of {', '.join(BACKENDS)}")
    return backend


def packed_positions(batch: int, seq_len: int, doc_len: int, generator: torch.Generator) -> torch.Tensor | None:
    """Positions restarting at 0 at each document start; documents of 1..2*doc_len tokens."""
    if doc_len <= 0:
        return None
    rows = []
    for _ in range(batch):
        lengths = torch.randint(1, 2 * doc_len + 1, (seq_len,), generator=generator)
        row = torch.cat([torch.arange(n) for n in lengths.tolist()])[:seq_len]
        rows.append(row)
    return torch.stack(rows)


def build_model(seq_len: int, compile_blocks: bool) -> tuple[torch.nn.Module, int]:
    config = llama3_model_config(dataclasses.replace(MODEL, max_seq_len=seq_len), VOCAB, attention="sdpa")
    with torch.device("meta"):
        model = config.build()
    model.to_empty(device="cuda")
    with torch.no_grad():
        model.init_weights()
    _, flops_per_token = config.get_nparams_and_flops(model, seq_len)
    if compile_blocks:
        # One compiled graph per attention backend; leave room so that switching backends never falls back to eager.
        torch._dynamo.config.recompile_limit = 64
        for block in model.layers.values():
            block.compile()
    return model, flops_per_token


def set_backend(model: torch.nn.Module, backend: str) -> None:
    for module in model.modules():
        if isinstance(module, DocumentAttention):
            module.backend = backend


def timed_steps(model, optimizer, tokens, positions, backend: str, steps: int) -> float:
    """Seconds per optimizer step, averaged over `steps` steps."""
    set_backend(model, backend)
    mask = DocumentMask.build(positions, backend) if positions is not None else None
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(tokens[:, :-1], positions, mask)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu_train: no CUDA device here; this benchmark needs a GPU (it measures GPU attention kernels).")
        return
    backends = [resolve(b) for b in args.backends]
    print(f"command: python {' '.join(sys.argv)}")
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  flash-attn installed: "
          f"{flash_attn_installed()}  'flash' runs as: {resolve('flash')}")
    model, flops_per_token = build_model(args.seq_len, compile_blocks=not args.no_compile)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (args.batch, args.seq_len + 1), generator=generator).cuda()
    positions = packed_positions(args.batch, args.seq_len, args.doc_len, generator)
    positions = positions.cuda() if positions is not None else None
    peak = peak_flops(None)
    print(f"model: {n_params / 1e9:.2f}B parameters, {flops_per_token / 1e9:.2f} GFLOPs/token; "
          f"batch {args.batch} x {args.seq_len}; doc_len {args.doc_len or 'row'}; peak {peak / 1e12:.0f} TFLOP/s")

    usable = []
    for backend in backends:  # compile and warm up; a kernel that cannot run this shape is reported and left out
        try:
            warm = time.perf_counter()
            timed_steps(model, optimizer, tokens, positions, backend, steps=2)
            print(f"  {backend}: compiled and warmed up in {time.perf_counter() - warm:.1f} s")
            usable.append(backend)
        except (RuntimeError, ValueError) as error:
            print(f"  {backend}: cannot run here ({str(error).splitlines()[0][:150]})")
            optimizer.zero_grad(set_to_none=True)
    seconds: dict[str, list[float]] = {b: [] for b in usable}
    for _ in range(args.repeats):
        for backend in usable:
            seconds[backend].append(timed_steps(model, optimizer, tokens, positions, backend, args.steps))

    tokens_per_step = args.batch * args.seq_len
    print(f"\n{'backend':16} {'median s/step':>14} {'tokens/s':>10} {'MFU %':>7} {'vs first':>9}")
    baseline = None
    for backend in usable:
        median = statistics.median(seconds[backend])
        baseline = baseline or median
        tps = tokens_per_step / median
        print(f"{backend:16} {median:14.4f} {tps:10.0f} {100 * flops_per_token * tps / peak:7.1f} "
              f"{median / baseline:8.2f}x")


if __name__ == "__main__":
    main()
