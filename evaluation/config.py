"""The eval stage's config, apart from its torch code so that composing an experiment stays light."""

from dataclasses import dataclass, field


@dataclass
class DownstreamConfig:
    """Multiple-choice tasks built from the lineage's held-out documents, run by lm-evaluation-harness."""

    enabled: bool = False
    examples_per_task: int = 300  # at most; fewer when the held-out text has fewer candidates
    min_examples: int = 50  # a task with fewer is skipped, with a warning that names it
    choices: int = 4  # the true answer and choices - 1 distractors: chance is 1 / choices
    context_chars: int = 300  # text before the answer, at most (about 90 tokens of the demo's tokenizer)
    python_domain: str = "python"  # the task "choose the line that parses" draws from this domain
    prose_domain: str = "docs"  # the cloze draws from this domain
    seed: int = 0  # which examples and distractors are drawn
    batch_size: int = 32  # lm-eval's HFLM batch


@dataclass
class EvalConfig:
    seq_len: int = 256
    batch_size: int = 8
    max_tokens_per_domain: int = 262144  # predicted tokens per domain, at most
    # The 95% interval of each domain's loss and bits-per-byte: resamples of the held-out documents, and the seed
    # that makes the interval the same on every rebuild.
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
