"""Typed configuration of a training run: the model, the optimisation and the parallelism.

Plain dataclasses with defaults, so that Hydra can register them as structured configs. The defaults
describe a small model that trains on two CPU ranks; GPU runs override sizes and dtype.
"""

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """A llama3-family decoder. The vocabulary size is not here: it comes from the tokenizer."""

    name: str = "llama3"
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    multiple_of: int = 32  # the SwiGLU hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_seq_len: int = 1024


@dataclass
class TrainConfig:
    """Optimisation: AdamW with a learning-rate schedule from training.schedules (warmup-stable-decay by default)."""

    steps: int = 300
    global_batch_size: int = 16  # sequences per optimizer step, over all data-parallel ranks
    seq_len: int = 256
    lr: float = 3e-3  # peak learning rate
    schedule: str = "wsd"  # training.schedules: cosine | linear | wsd | constant
    min_lr_ratio: float = 0.1  # the learning rate decays to min_lr_ratio * lr (0: to zero)
    warmup_steps: int = 20  # linear warmup, before any schedule; in a continual run it is the rewarming
    warmup_start_ratio: float = 0.0  # the warmup ramps from warmup_start_ratio * lr (rewarming: the parent's end)
    decay_fraction: float = 0.2  # wsd: share of the steps spent in the final decay
    decay_shape: str = "linear"  # wsd decay / constant cooldown: linear | cosine | 1-sqrt
    cooldown_steps: int = 0  # constant: final steps spent decaying (0: constant to the end)
    schedule_steps: int = 0  # steps the schedule spans (0: `steps`); longer keeps a stable-phase run undecayed
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_interval: int = 100
    # Extra checkpoints 1, 2, 4, 8, ... steps after the start, below this many steps (0: none), so that the eval
    # curve resolves an early rise and recovery (the stability gap of continual pretraining).
    checkpoint_early: int = 0
    log_every: int = 1
    dtype: str = "float32"  # compute dtype; bf16 is ~15x slower than float32 on CPU
    peak_tflops: float | None = None  # per-device peak for MFU; None: the GPU's bf16 peak, no MFU on CPU


@dataclass
class ParallelConfig:
    """How the ranks share the work (torchtitan's FSDP2 / tensor parallelism) and how the nodes find each other."""

    nproc_per_node: int = 2
    dp_shard: int = -1  # FSDP degree; -1 takes every rank left after tensor parallelism
    tp: int = 1  # tensor-parallel degree; dp_shard * tp must equal the world size (nnodes * nproc_per_node)
    backend: str = "auto"  # "auto": gloo on CPU, nccl on GPU; otherwise passed to init_process_group
    compile: bool = False  # torch.compile each transformer block (GPU)
    # Multi-node (torchrun rendezvous); nnodes = 1 is a standalone run on a free local port.
    nnodes: int = 1
    rdzv_endpoint: str = ""  # host:port that every node reaches (node 0's address); required when nnodes > 1
    rdzv_id: str = ""  # one id per run, the same on every node; required when nnodes > 1
    rdzv_backend: str = "c10d"  # "c10d" assigns node ranks itself; "static" takes node_rank
    node_rank: int = 0  # this node's rank, only read by the static rendezvous


INIT_MODES = ("weights", "weights_and_optimizer", "branch")


@dataclass
class InitConfig:
    """Start from a parent run's DCP checkpoint (continual pretraining, WSD cooldown branches).

    weights: the parent's model, a fresh optimizer, schedule and data position, step 0.
    weights_and_optimizer: the parent's model and AdamW state, a fresh schedule and data position, step 0.
    branch: everything (model, optimizer, schedule position, loader state, step): the parent run continues from
    step N in a new output folder, under this job's config (e.g. a cooldown of another length).
    A job that already has checkpoints of its own resumes from them and ignores this section.
    """

    checkpoint: str = ""  # absolute path of the parent's <output_dir>/checkpoint/step-N folder
    mode: str = "weights"  # one of INIT_MODES
