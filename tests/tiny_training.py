"""Shared by the training tests: a synthetic corpus with its tokenizer, a tiny job, and running a job with torchrun."""

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from evaluation.perplexity import ValSplit
from training.config import ModelConfig, ParallelConfig, TrainConfig
from training.job import TrainJob, launch_command
from training.outputs import TIMING_SUMMARY_FILE, step_log

REPO = Path(__file__).resolve().parents[1]
WORDS = "the a cat dog bird sat ran flew on under over mat tree house red blue small big and then".split()


def synthetic_text(n_sentences: int, seed: int) -> str:
    """Sentences from a fixed cycle of 32, so the stream has structure a tiny model learns in 30 steps."""
    rng = np.random.default_rng(0)
    cycle = [" ".join(rng.choice(WORDS, size=8)) + "." for _ in range(32)]
    return " ".join(cycle[(seed + i) % len(cycle)] for i in range(n_sentences))


@dataclass
class Corpus:
    tokenizer_dir: Path
    train_tokens: Path
    val: ValSplit
    vocab_size: int


def make_corpus(root: Path) -> Corpus:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([synthetic_text(200, seed) for seed in range(8)], trainer)
    tokenizer.save(str(root / "tokenizer.json"))

    def write_tokens(text: str, name: str) -> Path:
        path = root / name
        np.asarray(tokenizer.encode(text).ids, dtype=np.uint32).tofile(path)
        return path

    train_tokens = write_tokens(synthetic_text(3000, seed=0), "train.bin")
    # Held-out documents as the mixed stage writes them: tokens one after another, and their index.
    val_texts = [synthetic_text(25, seed=5 + i) for i in range(8)]
    val_tokens = [np.asarray(tokenizer.encode(text).ids, dtype=np.uint32) for text in val_texts]
    np.concatenate(val_tokens).tofile(root / "val.bin")
    np.savez(root / "val.index.npz", doc_offsets=np.cumsum([0] + [len(t) for t in val_tokens]),
             doc_bytes=np.array([len(text.encode("utf-8")) for text in val_texts]))
    val = ValSplit(str(root / "val.bin"), str(root / "val.index.npz"))
    return Corpus(root, train_tokens, val, tokenizer.get_vocab_size())


def tiny_job(corpus: Corpus, output_dir: Path, steps: int, nproc: int = 2, **overrides) -> TrainJob:
    """A two-layer model on 8 x 64 tokens per step; `overrides` sets TrainJob fields (parallel, init, tracking)."""
    fields = {
        "model": ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128),
        "train": TrainConfig(
            steps=steps,
            global_batch_size=8,
            seq_len=64,
            lr=3e-3,
            warmup_steps=5,
            decay_fraction=0.2,
            checkpoint_interval=10,
            log_every=1,
        ),
        "parallel": ParallelConfig(nproc_per_node=nproc),
        "tokenizer_dir": str(corpus.tokenizer_dir),
        "train_tokens": str(corpus.train_tokens),
        "output_dir": str(output_dir),
        **overrides,
    }
    return TrainJob(**fields)


def start_job(job: TrainJob, env: dict[str, str] | None = None, seed_checkpoint: bool = False) -> subprocess.Popen:
    job_path = Path(job.output_dir).with_suffix(".json")
    job.save(job_path)
    return subprocess.Popen(
        launch_command(job_path, seed_checkpoint),
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_job(job: TrainJob, env: dict[str, str] | None = None) -> dict:
    """Run `job` to the end; its train_summary.json with the timings of report/train_timings.json."""
    finish(start_job(job, env))
    summary = json.loads(Path(job.output_dir, "train_summary.json").read_text())
    return {**summary, **json.loads(Path(job.output_dir, TIMING_SUMMARY_FILE).read_text())}


def write_seed_checkpoint(job: TrainJob) -> Path:
    """`job`'s initial weights, written unsharded by one rank: <output_dir>/checkpoint/step-0."""
    finish(start_job(job, seed_checkpoint=True))
    return Path(job.output_dir, "checkpoint", "step-0")


def finish(proc: subprocess.Popen) -> str:
    """Wait for a job started by `start_job`; its rank-0 output."""
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-6000:]
    return output


def step_losses(output_dir: Path) -> dict[int, float]:
    """The loss of every step in the run's train_steps.jsonl; after a resume, the rerun of a step wins."""
    return {step: row["loss"] for step, row in step_log(output_dir).items()}
