"""Causal attention with per-document masking over packed rows, on the best kernel the machine has.

A row of the batch packs several documents; `positions` ([B, L], torchtitan's convention) restarts at 0 where a
document starts, and every row starts a document at its first token whatever its position says. A token attends
to the tokens before it in its own document only.

One entry point, `attention(q, k, v, mask=..., backend=...)`, over these backends:

| backend          | kernel                                                   | where                              |
| ---------------- | -------------------------------------------------------- | ---------------------------------- |
| `flash_varlen`   | flash-attn's `flash_attn_varlen_func` over packed tokens | CUDA with flash-attn installed     |
| `torch_varlen`   | PyTorch's built-in FlashAttention varlen (`varlen_attn`)  | CUDA                               |
| `sdpa`           | `F.scaled_dot_product_attention`, PyTorch picks a kernel | everywhere (CPU training)          |
| `sdpa_<kernel>`  | SDPA held to flash / efficient / math / cudnn            | flash: CUDA, no document mask      |
| `flex`           | FlexAttention with a block mask                          | CUDA; CPU forward only (no backward) |

Masks are built once per batch (`DocumentMask.build`, None when no row holds a second document) and reused by
every layer. SDPA takes the document mask as
an explicit boolean [B, 1, L, L] mask (memory quadratic in L: fine for CPU and tests, use a varlen backend for long
GPU rows); without a mask every backend is plain causal (SDPA's `is_causal`).
"""

import importlib.util
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

SDPA_BACKENDS: dict[str, SDPBackend | None] = {
    "sdpa": None,  # PyTorch's own choice
    "sdpa_flash": SDPBackend.FLASH_ATTENTION,
    "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa_math": SDPBackend.MATH,
    "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
}
VARLEN_BACKENDS = ("flash_varlen", "torch_varlen")
BACKENDS = (*VARLEN_BACKENDS, *SDPA_BACKENDS, "flex")
# Kernels that broadcast key/value heads over query groups themselves; the others get expanded heads.
_NATIVE_GQA = ("sdpa", "sdpa_math", "sdpa_flash", "flex")


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def attention_backend(device: torch.device) -> str:
    """The backend a model on `device` trains with: flash-attn's varlen kernel where it can run, else SDPA."""
    if device.type == "cuda" and flash_attn_installed():
        return "flash_varlen"
    return "sdpa"


@dataclass(frozen=True)
class DocumentMask:
    """Which tokens of a [B, L] batch share a document, in the form `backend` consumes."""

    backend: str
    cu_seqlens: torch.Tensor | None = None  # varlen: int32 document offsets into the B * L packed tokens
    max_seqlen: int = 0  # varlen: the longest document
    dense: torch.Tensor | None = None  # SDPA: bool [B, 1, L, L], True where attention is allowed
    block_mask: BlockMask | None = None  # flex

    @classmethod
    def build(cls, positions: torch.Tensor, backend: str) -> "DocumentMask | None":
        """The mask of `positions`; None where every row is a single document (plain causal is then exact)."""
        check_backend(backend)
        starts = positions == 0
        starts[:, 0] = True  # a row always starts a document
        if not starts[:, 1:].any():  # one host sync per batch; the plain causal kernels are the fastest
            return None
        if backend in VARLEN_BACKENDS:
            flat_starts = starts.flatten().nonzero().flatten()
            end = torch.tensor([starts.numel()], device=positions.device)
            cu_seqlens = torch.cat([flat_starts, end]).to(torch.int32)
            max_seqlen = int(cu_seqlens.diff().max())  # one host sync per batch, not per layer
            return cls(backend, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        doc_ids = starts.cumsum(dim=1)
        if backend == "flex":

            def same_document_causal(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor):
                return (q >= kv) & (doc_ids[b, q] == doc_ids[b, kv])

            batch, length = positions.shape
            block_mask = create_block_mask(same_document_causal, batch, None, length, length, device=positions.device)
            return cls(backend, block_mask=block_mask)
        if backend == "sdpa_flash":
            raise ValueError("SDPA's flash kernel takes no attention mask: use flash_varlen or torch_varlen")
        length = positions.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=positions.device).tril()
        dense = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal
        return cls(backend, dense=dense[:, None])


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: DocumentMask | None = None,
    backend: str = "sdpa",
    scale: float | None = None,
) -> torch.Tensor:
    """Causal attention of q [B, L, Nq, H] over k, v [B, L, Nkv, H] (Nq a multiple of Nkv) -> [B, L, Nq, H].

    With `mask` (built for the same backend) a token sees only earlier tokens of its own document.
    """
    check_backend(backend)
    if mask is not None and mask.backend != backend:
        raise ValueError(f"mask built for {mask.backend!r}, not {backend!r}: rebuild it with DocumentMask.build")
    if backend in VARLEN_BACKENDS:
        return _varlen(q, k, v, mask, backend, scale)
    if backend not in _NATIVE_GQA and k.shape[2] != q.shape[2]:
        groups = q.shape[2] // k.shape[2]
        k, v = k.repeat_interleave(groups, dim=2), v.repeat_interleave(groups, dim=2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # SDPA and flex take [B, N, L, H]
    gqa = k.shape[1] != q.shape[1]
    if backend == "flex":
        block_mask = mask.block_mask if mask is not None else _causal_block_mask(q)
        out = _flex(q.device)(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)
    else:
        chosen = SDPA_BACKENDS[backend]
        with nullcontext() if chosen is None else sdpa_kernel([chosen]):
            dense = mask.dense if mask is not None else None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=dense, is_causal=dense is None, scale=scale, enable_gqa=gqa
            )
    return out.transpose(1, 2)


def _varlen(q, k, v, mask: DocumentMask | None, backend: str, scale: float | None) -> torch.Tensor:
    batch, length, _, head_dim = q.shape
    out_dtype = q.dtype
    if mask is None:  # each row is one document
        cu_seqlens = torch.arange(0, (batch + 1) * length, length, dtype=torch.int32, device=q.device)
        mask = DocumentMask(backend, cu_seqlens=cu_seqlens, max_seqlen=length)
    # The FlashAttention kernels take half precision only; activations are bf16 under mixed precision anyway.
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    q, k, v = (t.reshape(batch * length, -1, head_dim).to(dtype) for t in (q, k, v))
    cu, longest = mask.cu_seqlens, mask.max_seqlen
    if backend == "flash_varlen":
        from flash_attn import flash_attn_varlen_func

        out = flash_attn_varlen_func(q, k, v, cu, cu, longest, longest, softmax_scale=scale, causal=True)
    else:
        from torch.nn.attention.varlen import varlen_attn

        gqa = k.shape[1] != q.shape[1]
        out = varlen_attn(q, k, v, cu, cu, longest, longest, scale=scale, window_size=(-1, 0), enable_gqa=gqa)
    return out.reshape(batch, length, -1, head_dim).to(out_dtype)


def _causal_block_mask(q: torch.Tensor) -> BlockMask:
    batch, _, length, _ = q.shape
    return create_block_mask(lambda b, h, i, j: i >= j, batch, None, length, length, device=q.device)


_compiled_flex = None


def _flex(device: torch.device):
    """FlexAttention is fast only compiled; on CPU (forward only) the eager kernel saves the compile time."""
    global _compiled_flex
    if device.type == "cpu":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex
