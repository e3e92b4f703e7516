"""The eval stage's config, apart from its torch code so that composing an experiment stays light."""

from dataclasses import dataclass


@dataclass
class EvalConfig:
    seq_len: int = 256
    batch_size: int = 8
    max_tokens_per_domain: int = 262144  # predicted tokens per domain, at most
