"""Our ModelConfig as a torchtitan llama3 model spec: torchtitan's own modules, sharding and FSDP code.

torchtitan's llama3 registry only knows fixed flavors (debugmodel, 8B, ...), so we assemble the same
config from its public building blocks at the sizes we ask for, with the same initialisation.
"""

from collections.abc import Callable
from functools import partial

import torch.nn as nn
from torchtitan.distributed.pipeline_parallel import pipeline_llm
from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm, compute_ffn_hidden_dim
from torchtitan.models.common.attention import ScaledDotProductAttention
from torchtitan.models.common.config_utils import get_attention_config, make_ffn_config, make_gqa_config
from torchtitan.models.common.param_init import depth_scaled_std
from torchtitan.models.llama3 import Llama3Model, parallelize_llama
from torchtitan.models.llama3.model import Llama3TransformerBlock
from torchtitan.models.llama3.state_dict_adapter import Llama3StateDictAdapter
from torchtitan.protocols.model_spec import ModelSpec
from torchtitan.protocols.module import Module

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


def _inner_attention(backend: str) -> Module.Config:
    # torchtitan refuses "sdpa" for language models because SDPA cannot take per-document masks; we
    # train on plain causal windows, for which SDPA with is_causal is exact.
    if backend == "sdpa":
        return ScaledDotProductAttention.Config()
    return get_attention_config(backend)


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
            inner_attention=_inner_attention(attention),
            fuse_qkv=True,
            rope=rope,
        ),
        feed_forward=make_ffn_config(
            dim=cfg.dim, hidden_dim=hidden, w1_param_init=_LINEAR_INIT, w2w3_param_init=_depth_init(layer_id)
        ),
    )


def llama3_model_config(cfg: ModelConfig, vocab_size: int, attention: str) -> Llama3Model.Config:
    """The torchtitan Llama3Model config for our sizes; `attention` is a backend name (kernels.attention)."""
    if cfg.name != "llama3":
        raise ValueError(f"unknown model family {cfg.name!r}; only 'llama3' is available")
    return Llama3Model.Config(
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
