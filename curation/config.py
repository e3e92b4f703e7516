"""The curation stages' configs: the typed dataclasses Hydra checks ``conf/`` against.

They live apart from the code they configure (``corpus``, ``filters``, ``dedup``, ...) so that composing an
experiment imports no datatrove, tokenizers or numpy: ``lab plan`` over many arms stays fast. Each stage module
documents what its fields do.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DomainCap:
    max_docs: int = 500
    max_bytes: int = 5_000_000


@dataclass
class CorpusConfig:
    """Where documents come from. ``source``: ``python_env`` (embedded default), ``jsonl`` or ``parquet``."""

    source: str = "python_env"
    # python_env: which parts of the installation to read.
    roots: list[str] = field(default_factory=lambda: ["stdlib", "site-packages"])
    domains: dict[str, DomainCap] = field(default_factory=dict)
    # Every source: a larger document (a JSONL line, for jsonl) is quarantined as "oversize" (python_env: skipped).
    max_doc_bytes: int = 2_000_000
    # jsonl / parquet: files or globs, local or s3://, and the field names to read.
    paths: list[str] = field(default_factory=list)
    text_field: str = "text"
    id_field: str = "id"
    domain_field: str = "domain"
    default_domain: str = "web"
    storage_options: dict[str, str] = field(default_factory=dict)


@dataclass
class HeldoutConfig:
    """Held-out documents per domain, chosen from the corpus before any filter (``curation.heldout``)."""

    # Share of each domain's corpus documents held out, taken in document-hash order.
    fraction: float = 0.05
    # Then more, in the same order, until a domain holds at least this many documents and (estimated) tokens:
    # a bootstrap interval over documents needs tens of them.
    min_documents: int = 20
    min_tokens: int = 16384
    # Tokens are estimated from UTF-8 bytes before the tokenizer exists (the mixed stage reports the real counts).
    bytes_per_token: float = 3.5
    # Never hold out more than this share of a domain's documents: the rest must be able to train. A domain that
    # reaches it before its minimums is named in a warning.
    max_fraction: float = 0.5


@dataclass
class DecontaminationConfig:
    enabled: bool = True
    # Words per n-gram (13 as in GPT-3 and OLMo's decontamination).
    ngram_size: int = 13
    # Drop a training document when at least this share of its n-grams occur in the eval texts. A share, not "any":
    # license headers and boilerplate shared with one eval file must not take every file that carries them.
    max_overlap: float = 0.5
    # Use the held-out documents (filter.heldout) as eval texts: a training document that duplicates one is dropped.
    use_validation_split: bool = True
    # Extra eval texts: JSONL files or globs (local or any fsspec URL), one text per line in ``eval_text_field``.
    eval_paths: list[str] = field(default_factory=list)
    eval_text_field: str = "text"


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    # MinHash: words per shingle, LSH bands and rows per band (datatrove's names). A pair of Jaccard similarity s is
    # found with probability 1 - (1 - s^rows)^bands: about 0.92 at s=0.8 with 14 x 8.
    ngram_size: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1


@dataclass
class SlurmOptions:
    partition: str = ""  # required for kind=slurm
    time: str = "04:00:00"  # per-task limit, sbatch --time
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    qos: str = "normal"
    job_name: str = "lab-curation"
    # Shell line that makes this project importable on the nodes, e.g. "source /shared/venv/bin/activate".
    env_command: str = ""
    sbatch_args: dict[str, str] = field(default_factory=dict)
    # How often to look whether the submitted chain has finished (the stage waits for its outputs).
    poll_seconds: float = 30.0
    timeout_hours: float = 48.0


@dataclass
class RayOptions:
    # Ray cluster to join ("auto", "ray://host:10001"); empty: a local Ray started on demand.
    address: str = ""
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0


@dataclass
class ExecutorConfig:
    kind: str = "local"  # local | slurm | ray
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    ray: RayOptions = field(default_factory=RayOptions)


@dataclass
class ProseRules:
    """Gopher quality / repetition and FineWeb thresholds for natural-language documents."""

    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: int = 3
    max_avg_word_length: int = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_non_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    line_punct_thr: float = 0.12
    short_line_thr: float = 0.67
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


@dataclass
class CodeRules:
    # Minified: any line longer than max_line_chars, or more characters per line than max_chars_per_line in a file
    # of minified_min_chars or more.
    max_line_chars: int = 1000
    max_chars_per_line: float = 100.0
    minified_min_chars: int = 200
    min_alnum_ratio: float = 0.25
    generated_header_lines: int = 10
    # Python: pylint-style score out of 10 (curation.code_filters.lint_score); SwallowCode keeps pylint >= 7.
    min_lint_score: float = 6.0
    lint_max_line_chars: int = 100


def _default_domain_rules() -> dict[str, list[str]]:
    return {"docs": ["prose"], "license": ["prose"], "web": ["prose"],
            "python": ["code", "python"], "code": ["code"], "data": ["code"]}


@dataclass
class FilterConfig:
    # Rule sets (keys of curation.filters.RULE_SETS) per domain; a domain not listed gets default_rule_sets.
    domain_rules: dict[str, list[str]] = field(default_factory=_default_domain_rules)
    default_rule_sets: list[str] = field(default_factory=lambda: ["prose"])
    prose: ProseRules = field(default_factory=ProseRules)
    code: CodeRules = field(default_factory=CodeRules)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    # Word splitting for Gopher, FineWeb and MinHash: regex (curation.word_tokenizer) or spacy (datatrove's default,
    # about 9x slower on the demo corpus).
    word_tokenizer: str = "regex"
    # How many tasks run at once (local processes, Slurm array tasks, Ray tasks). Speed only: not fingerprinted.
    workers: int = 1
    # Where the tasks run. Speed only: not fingerprinted.
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096
    min_frequency: int = 2
    # Cap on the training text: BPE merges converge long before a large corpus is exhausted.
    max_train_bytes: int = 50_000_000


@dataclass
class PhaseConfig:
    name: str = "main"
    fraction: float = 1.0  # share of the training tokens; phases are trained in the order listed
    weights: dict[str, float] = field(default_factory=dict)  # empty: mixture.weights
    temperature: float | None = None  # None: mixture.temperature
    condition: bool = True  # prepend mixture.source_template (if set); false gives a plain (MeCo) cooldown


@dataclass
class ReplayConfig:
    fraction: float = 0.0  # share of the rows of every global batch drawn from the replay mixture
    weights: dict[str, float] = field(default_factory=dict)  # the replay mixture, e.g. the "old corpus" domains


@dataclass
class RehydrationConfig:
    """Dedup-aware rebalancing, FineWeb2's "rehydration" (``curation.rehydration``): each training document is
    repeated by the size of its duplicate cluster, as far as documents of that size pass the quality filters."""

    enabled: bool = False
    # Lower edges of the cluster-size buckets, from 1 and increasing: a bucket holds the sizes from its edge to the
    # next edge - 1, the last one everything above (FineWeb2's table: 1, 2, 3-4, 5-99, 100-999, 1000+).
    buckets: list[int] = field(default_factory=lambda: [1, 2, 3, 5, 100, 1000])
    # Most times one document may appear; a bucket whose documents always pass repeats min(its edge, this).
    max_repeats: int = 8
    # A bucket with fewer documents than this (kept and removed) repeats once: too few to measure a pass rate.
    min_bucket_documents: int = 10
    # Repeat counts fixed by bucket edge, overriding the pass rates, e.g. {1000: 1} (FineWeb2: huge clusters are
    # assumed to be spam).
    fixed_repeats: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # At compose time (OmegaConf builds the dataclass), so a bad value fails before any stage runs.
        edges = list(self.buckets)
        if not edges or edges[0] != 1 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"mixture.rehydration.buckets must start at 1 and increase, got {edges}")
        if self.max_repeats < 1:
            raise ValueError(f"mixture.rehydration.max_repeats must be >= 1 (1: no upsampling), got {self.max_repeats}")
        if self.min_bucket_documents < 1:
            raise ValueError(f"mixture.rehydration.min_bucket_documents must be >= 1, got {self.min_bucket_documents}")
        unknown = sorted(set(self.fixed_repeats) - set(edges))
        if unknown:
            raise ValueError(f"mixture.rehydration.fixed_repeats names buckets {unknown} that are not bucket edges; "
                             f"buckets: {edges}")
        bad = {edge: n for edge, n in self.fixed_repeats.items() if not 1 <= n <= self.max_repeats}
        if bad:
            raise ValueError(f"mixture.rehydration.fixed_repeats {bad}: each count must lie in [1, max_repeats="
                             f"{self.max_repeats}] (a document is never dropped here)")


@dataclass
class MixtureConfig:
    # Target share of training tokens per domain (normalized); domains left out are held out of training.
    # Empty: every domain with training documents, in proportion to its training tokens.
    weights: dict[str, float] = field(default_factory=dict)
    # > 0: shares proportional to (domain training tokens) ** (1 / T) over the domains weights select; 0: weights.
    temperature: float = 0.0
    phases: list[PhaseConfig] = field(default_factory=list)  # empty: one phase "main" with the weights above
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    # MeCo source conditioning, e.g. "source: {domain}/{source}\n"; empty: none.
    source_template: str = ""
    train_tokens: int = 2_000_000  # main stream plus replay; size it to train.steps * global batch * seq_len
    # Training documents longer than this are mixed as pieces of at most this many tokens (each piece starts an
    # attention document), so one long file cannot hold its domain back from its share; 0: never split.
    max_doc_tokens: int = 4096
    seed: int = 0
    encode_batch_size: int = 256
    rehydration: RehydrationConfig = field(default_factory=RehydrationConfig)
