"""Our ModelConfig as a torchtitan llama3 model spec: torchtitan's own modules, sharding and FSDP code.

torchtitan's llama3 registry only knows fixed flavors (debugmodel, 8B, ...), so we assemble the same
config from its public building blocks at the sizes we ask for, with the same initialisation. Attention is
ours (kernels.attention): causal within each packed document on every backend, CPU included.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from torchtitan.distributed.pipeline_parallel import pipeline_llm
from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm, compute_ffn_hidden_dim
from torchtitan.models.common.config_utils import make_ffn_config, make_gqa_config
from torchtitan.models.common.param_init import depth_scaled_std
from torchtitan.models.llama3 import Llama3Model, parallelize_llama
from torchtitan.models.llama3.model import Llama3TransformerBlock
from torchtitan.models.llama3.state_dict_adapter import Llama3StateDictAdapter
from torchtitan.protocols.model_spec import ModelSpec
from torchtitan.protocols.module import Module

from kernels.attention import DocumentMask, attention, check_backend
from training.config import ModelConfig

_LINEAR_INIT = {"weight": partial(nn.init.trunc_normal_, std=0.02), "bias": nn.init.zeros_}
_NORM_INIT = {"weight": nn.init.ones_}
_EMBEDDING_INIT = {"weight": partial(nn.init.normal_, std=1.0)}


def _depth_init(layer_id: int) -> dict[str, Callable]:
    std = depth_scaled_std(0.02, layer_id)
    return {"weight": partial(nn.init.trunc_normal_, std=std), "bias": nn.init.zeros_}


def _output_init(dim: int) -> dict[str, Callable]:
    s = dim**-0.5
    return {"weight": partial(nn.init.trunc_normal_, std=s, a=-3 * s, b=3 * s), "bias": nn.init.zeros_}


class DocumentAttention(Module):
    """torchtitan's inner attention slot filled by kernels.attention; its masks come from PackedLlama3Model."""

    @dataclass(kw_only=True, slots=True)
    class Config(Module.Config):
        backend: str = "sdpa"  # a kernels.attention backend name

    def __init__(self, config: Config):
        super().__init__()
        check_backend(config.backend)
        self.backend = config.backend

    # The argument names are torchtitan's: its tensor-parallel plan shards the inputs by these names.
    def forward(
        self,
        q_BLNH: torch.Tensor,
        k_BLNH: torch.Tensor,
        v_BLNH: torch.Tensor,
        *,
        attention_masks: DocumentMask | None = None,
        scale: float | None = None,
        **_: Any,  # enable_gqa: the kernels read it from the head counts
    ) -> torch.Tensor:
        return attention(q_BLNH, k_BLNH, v_BLNH, mask=attention_masks, backend=self.backend, scale=scale)


class PackedLlama3Model(Llama3Model):
    """torchtitan's Llama3Model that builds the per-document mask from `positions` itself.

    torchtitan's Trainer builds masks only for its own Flex/Varlen modules and passes our model `positions`
    alone, so the mask is made here, once per forward, and shared by every layer. Without positions (e.g.
    evaluation windows) attention is plain causal.
    """

    @dataclass(kw_only=True, slots=True)
    class Config(Llama3Model.Config):
        pass

    def get_attention_masks(self, positions: torch.Tensor) -> DocumentMask | None:
        return DocumentMask.build(positions, self.config.first_attention.inner_attention.backend)

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor | None = None, attention_masks: DocumentMask | None = None
    ) -> torch.Tensor:
        if attention_masks is None and positions is not None:
            attention_masks = self.get_attention_masks(positions)
        return super().forward(tokens, positions, attention_masks)


def _block(cfg: ModelConfig, layer_id: int, attention: str) -> Llama3TransformerBlock.Config:
    rope = ComplexRoPE.Config(dim=cfg.dim // cfg.n_heads, max_seq_len=cfg.max_seq_len, theta=cfg.rope_theta)
    hidden = compute_ffn_hidden_dim(cfg.dim, multiple_of=cfg.multiple_of, ffn_dim_multiplier=cfg.ffn_dim_multiplier)
    return Llama3TransformerBlock.Config(
        attention_norm=RMSNorm.Config(normalized_shape=cfg.dim, eps=cfg.norm_eps, param_init=_NORM_INIT),
        ffn_norm=RMSNorm.Config(normalized_shape=cfg.dim, eps=cfg.norm_eps, param_init=_NORM_INIT),
        attention=make_gqa_config(
            dim=cfg.dim,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_kv_heads,
            wqkv_param_init=_LINEAR_INIT,
            wo_param_init=_depth_init(layer_id),
            inner_attention=DocumentAttention.Config(backend=attention),
            fuse_qkv=True,
            rope=rope,
        ),
        feed_forward=make_ffn_config(
            dim=cfg.dim, hidden_dim=hidden, w1_param_init=_LINEAR_INIT, w2w3_param_init=_depth_init(layer_id)
        ),
    )


def llama3_model_config(cfg: ModelConfig, vocab_size: int, attention: str) -> PackedLlama3Model.Config:
    """The torchtitan Llama3Model config for our sizes; `attention` is a backend name (kernels.attention)."""
    if cfg.name != "llama3":
        raise ValueError(f"unknown model family {cfg.name!r}; only 'llama3' is available")
    return PackedLlama3Model.Config(
        dim=cfg.dim,
        vocab_size=vocab_size,
        tok_embeddings=Embedding.Config(num_embeddings=vocab_size, embedding_dim=cfg.dim, param_init=_EMBEDDING_INIT),
        norm=RMSNorm.Config(normalized_shape=cfg.dim, eps=cfg.norm_eps, param_init=_NORM_INIT),
        lm_head=Linear.Config(in_features=cfg.dim, out_features=vocab_size, param_init=_output_init(cfg.dim)),
        layers=[_block(cfg, layer_id, attention) for layer_id in range(cfg.n_layers)],
    )


def llama3_spec(cfg: ModelConfig, vocab_size: int, attention: str) -> ModelSpec:
    """The model spec the torchtitan Trainer takes: our config plus llama3's parallelize/pipeline code."""
    return ModelSpec(
        name="llama3",
        flavor=f"d{cfg.dim}-l{cfg.n_layers}-h{cfg.n_heads}",
        model=llama3_model_config(cfg, vocab_size, attention),
        parallelize_fn=parallelize_llama,
        pipelining_fn=pipeline_llm,
        post_optimizer_build_fn=None,
        state_dict_adapter=Llama3StateDictAdapter,
    )
