"""The eval stage's config, apart from its torch code so that composing an experiment stays light."""

from dataclasses import dataclass


@dataclass
class EvalConfig:
    seq_len: int = 256
    batch_size: int = 8
    max_tokens_per_domain: int = 262144  # predicted tokens per domain, at most
    # The 95% interval of each domain's loss and bits-per-byte: resamples of the held-out documents, and the seed
    # that makes the interval the same on every rebuild.
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
