"""Which attention kernel the model uses on this machine."""

import importlib.util

import torch


def attention_backend(device: torch.device) -> str:
    """The torchtitan attention backend name for a model that runs on `device`.

    "varlen" (torchtitan's VarlenAttention: FlashAttention kernels over packed sequences) needs a CUDA
    device, and we only pick it where the flash-attn package is installed, i.e. on GPU hosts set up with
    the `gpu` extra. Everywhere else "sdpa": PyTorch's scaled_dot_product_attention with a causal mask,
    which has a CPU backward (FlexAttention, torchtitan's default, has none).
    """
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "varlen"
    return "sdpa"
