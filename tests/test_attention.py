"""Every attention backend against a float64 reference, with and without packed documents; and the model's
packed forward against the documents run alone."""

import pytest
import torch

from kernels.attention import BACKENDS, DocumentMask, attention, flash_attn_installed
from training.config import ModelConfig
from training.model import llama3_model_config

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_flash_attn = pytest.mark.skipif(not flash_attn_installed(), reason="needs the flash-attn package")
GPU_TOL = 2e-2  # bfloat16

# backend -> (device, takes a document mask, has a backward there, tolerance)
CASES = {
    "sdpa": ("cpu", True, True, 1e-5),
    "sdpa_math": ("cpu", True, True, 1e-5),
    "flex": ("cpu", True, False, 1e-5),  # FlexAttention has no CPU backward
    "sdpa_cuda": ("cuda", True, True, GPU_TOL),
    "sdpa_flash": ("cuda", False, True, GPU_TOL),
    "sdpa_efficient": ("cuda", True, True, GPU_TOL),
    "sdpa_cudnn": ("cuda", False, True, GPU_TOL),
    "torch_varlen": ("cuda", True, True, GPU_TOL),
    "flex_cuda": ("cuda", True, True, GPU_TOL),
    "flash_varlen": ("cuda", True, True, GPU_TOL),
}


def case_params() -> list:
    marks = {"flash_varlen": [needs_cuda, needs_flash_attn]}
    return [
        pytest.param(case, marks=marks.get(case, [needs_cuda] if device == "cuda" else []))
        for case, (device, *_) in CASES.items()
    ]


def packed_positions(lengths_per_row: list[list[int]]) -> torch.Tensor:
    return torch.stack([torch.cat([torch.arange(n) for n in lengths]) for lengths in lengths_per_row])


def reference(q, k, v, positions: torch.Tensor | None) -> torch.Tensor:
    """Attention written out in float64: softmax over the earlier tokens of the same document."""
    q, k, v = (t.double() for t in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(groups, dim=2), v.repeat_interleave(groups, dim=2)
    length = q.shape[1]
    scores = torch.einsum("blnh,bmnh->bnlm", q, k) / q.shape[-1] ** 0.5
    allowed = torch.ones(length, length, dtype=torch.bool).tril().expand(q.shape[0], length, length)
    if positions is not None:
        starts = positions == 0
        starts[:, 0] = True
        doc = starts.cumsum(1)
        allowed = allowed & (doc[:, :, None] == doc[:, None, :])
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return torch.einsum("bnlm,bmnh->blnh", scores.softmax(-1), v)


def random_qkv(device: str, dtype: torch.dtype, requires_grad: bool):
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 24, 4, 16), (2, 24, 2, 16), (2, 24, 2, 16)]  # grouped-query: 4 query heads over 2 kv heads
    return [torch.randn(s, generator=g).to(device, dtype).requires_grad_(requires_grad) for s in shapes]


@pytest.mark.parametrize("documents", [False, True], ids=["causal", "packed"])
@pytest.mark.parametrize("case", case_params())
def test_backend_matches_float64_reference(case: str, documents: bool) -> None:
    device, masks, backward, tol = CASES[case]
    backend = case.removesuffix("_cuda")
    if documents and not masks:
        pytest.skip(f"{backend} takes no document mask")
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    q, k, v = random_qkv(device, dtype, requires_grad=backward)
    # row 0: documents of 10, 9 and 5 tokens; row 1 starts mid-document (position 7) and then one of 20
    positions = packed_positions([[10, 9, 5], [4, 20]]).to(device) if documents else None
    if positions is not None:
        positions[1, :4] += 7
    mask = DocumentMask.build(positions, backend) if documents else None
    out = attention(q, k, v, mask=mask, backend=backend)
    ref = reference(q.cpu(), k.cpu(), v.cpu(), None if positions is None else positions.cpu())
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.double().cpu(), ref, atol=tol, rtol=tol)
    if backward:
        grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
        leaves = [t.detach().cpu().double().requires_grad_() for t in (q, k, v)]
        ref_out = reference(*leaves, None if positions is None else positions.cpu())
        ref_grads = torch.autograd.grad(ref_out.square().sum(), leaves)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got.double().cpu(), want, atol=10 * tol, rtol=10 * tol)


def test_document_mask_isolates_documents() -> None:
    # Changing the first document's values must not change the second document's outputs.
    q, k, v = random_qkv("cpu", torch.float32, requires_grad=False)
    positions = packed_positions([[12, 12], [12, 12]])
    mask = DocumentMask.build(positions, "sdpa")
    out = attention(q, k, v, mask=mask, backend="sdpa")
    v2 = v.clone()
    v2[:, :12] += 1.0
    out2 = attention(q, k, v2, mask=mask, backend="sdpa")
    torch.testing.assert_close(out[:, 12:], out2[:, 12:])
    assert not torch.allclose(out[:, :12], out2[:, :12])


def test_rows_of_one_document_need_no_mask() -> None:
    # Plain causal is exact there, also for a row that starts mid-document.
    assert DocumentMask.build(packed_positions([[24], [24]]), "sdpa") is None
    assert DocumentMask.build(packed_positions([[24], [24]]) + 5, "flash_varlen") is None
    assert DocumentMask.build(packed_positions([[24], [20, 4]]), "sdpa") is not None


def test_bad_backend_and_mismatched_mask_name_the_fix() -> None:
    q, k, v = random_qkv("cpu", torch.float32, requires_grad=False)
    with pytest.raises(ValueError, match="choose one of"):
        attention(q, k, v, backend="flash3")
    mask = DocumentMask.build(packed_positions([[12, 12], [24]]), "sdpa_math")
    with pytest.raises(ValueError, match="rebuild it"):
        attention(q, k, v, mask=mask, backend="sdpa")
    with pytest.raises(ValueError, match="flash_varlen"):
        DocumentMask.build(packed_positions([[12, 12], [24]]), "sdpa_flash")
    assert {case.removesuffix("_cuda") for case in CASES} == set(BACKENDS)  # every backend is tested


def test_packed_row_equals_documents_alone() -> None:
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = llama3_model_config(cfg, vocab_size=50, attention="sdpa").build()
    model.to_empty(device="cpu")
    with torch.no_grad():
        model.init_weights()
    model.eval()
    first, second = torch.randint(0, 50, (1, 11)), torch.randint(0, 50, (1, 17))
    packed = torch.cat([first, second], dim=1)
    positions = packed_positions([[11, 17]])
    with torch.no_grad():
        together = model(packed, positions)
        alone = [model(first), model(second)]
        unmasked = model(packed)
    torch.testing.assert_close(together[:, :11], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[:, 11:], alone[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked[:, 11:], alone[1], atol=1e-3)  # without positions it is one sequence
