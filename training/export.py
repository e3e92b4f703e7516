"""A DCP training checkpoint -> a Hugging Face Llama folder that `transformers.LlamaForCausalLM` loads.

Weights go through torchtitan's Llama3 state-dict adapter (its names, and its permutation of the query/key rows
from torchtitan's interleaved RoPE pairs to Hugging Face's rotate-half layout) into `model.safetensors`; our
ModelConfig becomes `config.json`; the tokenizer files are copied beside them.

    python -m training.export CHECKPOINT_DIR TOKENIZER_DIR OUT_DIR --model conf/model/llama_cpu.yaml
"""

import argparse
import json
import shutil
from pathlib import Path

import yaml
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torchtitan.models.common import compute_ffn_hidden_dim
from torchtitan.models.llama3.state_dict_adapter import Llama3StateDictAdapter

from evaluation.perplexity import load_model
from training.config import ModelConfig
from training.model import llama3_model_config


def hf_config(cfg: ModelConfig, tokenizer: Tokenizer, bos: str | None, eos: str | None) -> dict:
    """LlamaConfig fields for our sizes (no RoPE scaling, no biases, untied output head)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": cfg.dim,
        "intermediate_size": compute_ffn_hidden_dim(
            cfg.dim, multiple_of=cfg.multiple_of, ffn_dim_multiplier=cfg.ffn_dim_multiplier
        ),
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.dim // cfg.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.token_to_id(bos) if bos else None,
        "eos_token_id": tokenizer.token_to_id(eos) if eos else None,
        "dtype": "float32",
    }


def export_hf(
    checkpoint_dir: str | Path | None, tokenizer_dir: str | Path, model_cfg: ModelConfig, out_dir: str | Path,
    seed: int = 0,
) -> Path:
    """Write the Hugging Face folder for the checkpoint at `checkpoint_dir` (a `step-N` DCP folder) to `out_dir`.

    With no checkpoint, the untrained model: the initialization of training seed `seed` (as `load_model` makes it).
    """
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    if checkpoint_dir is not None and not Path(checkpoint_dir, ".metadata").is_file():
        raise FileNotFoundError(f"{checkpoint_dir} is no complete DCP checkpoint (no .metadata): pass a step-N folder")
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    vocab_size = tokenizer.get_vocab_size()
    model = load_model(None if checkpoint_dir is None else Path(checkpoint_dir), model_cfg, vocab_size, seed)
    # The fused wqkv is saved as torchtitan's stock wq/wk/wv (a state_dict hook), which the adapter maps.
    adapter = Llama3StateDictAdapter(llama3_model_config(model_cfg, vocab_size, attention="sdpa"), None)
    hf_state = {key: value.detach().contiguous() for key, value in adapter.to_hf(model.state_dict()).items()}

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(hf_state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config_path = tokenizer_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    # transformers needs to be told which class reads a bare tokenizer.json.
    tokenizer_config |= {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_cfg.max_seq_len}
    shutil.copyfile(tokenizer_dir / "tokenizer.json", out_dir / "tokenizer.json")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    config = hf_config(model_cfg, tokenizer, tokenizer_config.get("bos_token"), tokenizer_config.get("eos_token"))
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", help="a DCP checkpoint: <checkpoint output>/checkpoint/step-N")
    parser.add_argument("tokenizer_dir", help="the tokenizer the model was trained with (tokenizer.json)")
    parser.add_argument("out_dir", help="the Hugging Face folder to write")
    parser.add_argument("--model", required=True, help="the run's model config: a conf/model/*.yaml file")
    args = parser.parse_args()
    model_cfg = ModelConfig(**yaml.safe_load(Path(args.model).read_text()))
    print(export_hf(args.checkpoint_dir, args.tokenizer_dir, model_cfg, args.out_dir))


if __name__ == "__main__":
    main()
