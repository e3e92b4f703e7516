"""Training and evaluation on two CPU ranks: real torchrun, real torchtitan, a tiny model.

One module-scoped fixture trains once and replays part of the run from a checkpoint; the tests read what
those runs left behind. The whole module takes about a minute on two cores.
"""

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from dagster_pipes import encode_param
from tiny_training import Corpus, make_corpus, run_job, tiny_job

from evaluation.config import EvalConfig
from evaluation.perplexity import evaluate_checkpoint, find_last_checkpoint
from training.config import ModelConfig, ParallelConfig, TrainConfig
from training.data import TokenFileDataLoader
from training.job import TrainJob, launch_command


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def loss_by_step(summary: dict) -> dict[int, float]:
    return {int(step): loss for step, loss in summary["loss_curve"]}


@dataclass
class Runs:
    base_dir: Path
    base: dict  # 30 steps from scratch
    replay: dict  # the same job, resumed from the base run's step-20 checkpoint in a fresh folder
    extended: dict  # the base job rerun on its own folder with 40 steps
    mlflow_uri: str
    mlflow_run_id: str
    pipes_messages: Path


@pytest.fixture(scope="module")
def runs(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("runs")
    base_dir, replay_dir = root / "base", root / "replay"
    base = run_job(tiny_job(corpus, base_dir, steps=30))

    shutil.copytree(base_dir / "checkpoint" / "step-20", replay_dir / "checkpoint" / "step-20")
    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(mlflow_uri)
    run_id = client.create_run(client.create_experiment("test")).info.run_id
    messages = root / "pipes_messages.jsonl"
    context = {
        "asset_keys": ["checkpoint"],
        "code_version_by_asset_key": None,
        "provenance_by_asset_key": None,
        "partition_key": None,
        "partition_key_range": None,
        "partition_time_window": None,
        "run_id": "test",
        "job_name": None,
        "retry_number": 0,
        "extras": {},
    }
    pipes_env = {
        "DAGSTER_PIPES_CONTEXT": encode_param({"data": context}),
        "DAGSTER_PIPES_MESSAGES": encode_param({"path": str(messages)}),
    }
    replay_job = tiny_job(corpus, replay_dir, steps=30, mlflow_tracking_uri=mlflow_uri, mlflow_run_id=run_id)
    replay = run_job(replay_job, pipes_env)

    extended = run_job(tiny_job(corpus, base_dir, steps=40))
    return Runs(base_dir, base, replay, extended, mlflow_uri, run_id, messages)


def test_loss_falls_and_summary_is_sane(runs: Runs) -> None:
    s = runs.base
    assert s["steps"] == 30
    assert [step for step, _ in s["loss_curve"]] == list(range(1, 31))
    assert s["first_loss"] == s["loss_curve"][0][1] and s["final_loss"] == s["loss_curve"][-1][1]
    assert s["final_loss"] < 0.6 * s["first_loss"]
    assert s["tokens_seen"] == 30 * 8 * 64
    assert s["tokens_per_second"] > 0 and s["wall_seconds"] > 0


def test_checkpoints_in_torchtitan_layout(runs: Runs) -> None:
    steps = sorted(p.name for p in (runs.base_dir / "checkpoint").iterdir())
    assert steps == ["step-10", "step-20", "step-30", "step-40"]
    assert all((runs.base_dir / "checkpoint" / name / ".metadata").is_file() for name in steps)


def test_rerun_resumes_after_last_checkpoint(runs: Runs) -> None:
    s = runs.extended
    assert s["loss_curve"][0][0] == 31 and s["steps"] == 40
    assert s["tokens_seen"] == 40 * 8 * 64
    assert s["first_loss"] < runs.base["first_loss"] - 1.0  # it kept the trained weights


def test_resume_reproduces_the_uninterrupted_run(runs: Runs) -> None:
    # Weights, optimizer, LR schedule and the loader's position all come back from the checkpoint.
    replayed, original = loss_by_step(runs.replay), loss_by_step(runs.base)
    assert sorted(replayed) == list(range(21, 31))
    for step, loss in replayed.items():
        assert loss == pytest.approx(original[step], rel=1e-6)  # bitwise equal on this machine


def test_metrics_reach_mlflow_and_pipes(runs: Runs) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(runs.mlflow_uri)
    history = client.get_metric_history(runs.mlflow_run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(21, 31))
    for key in ("train/lr", "train/tokens_per_second", "train/grad_norm", "train/peak_memory_gib"):
        assert len(client.get_metric_history(runs.mlflow_run_id, key)) == 10

    messages = [json.loads(line) for line in runs.pipes_messages.read_text().splitlines()]
    assert messages[0]["method"] == "opened" and messages[-1]["method"] == "closed"
    assert messages[-1]["params"] in (None, {})  # closed without an exception
    logs = [m["params"]["message"] for m in messages if m["method"] == "log"]
    assert sum(line.startswith("step ") for line in logs) == 10
    assert not any(m["method"] == "report_asset_materialization" for m in messages)


def test_evaluate_checkpoint_bits_per_byte(runs: Runs, corpus: Corpus) -> None:
    checkpoint = find_last_checkpoint(runs.base_dir)
    assert checkpoint.name == "step-40"
    job = tiny_job(corpus, runs.base_dir, steps=40)
    cfg = EvalConfig(seq_len=64, batch_size=4, max_tokens_per_domain=100_000)
    result = evaluate_checkpoint(checkpoint, job.model, corpus.vocab_size, {"synthetic": corpus.val}, cfg)["synthetic"]
    n_tokens = len(np.fromfile(corpus.val.tokens_path, dtype=np.uint32))
    assert result.tokens == n_tokens - 1
    assert math.isfinite(result.bits_per_byte) and result.bits_per_byte > 0
    with np.load(corpus.val.index_path) as index:
        expected = result.loss * result.tokens / (math.log(2) * index["doc_bytes"].sum())
    assert result.bits_per_byte == pytest.approx(expected, rel=1e-9)
    assert result.documents == 8
    assert result.loss_ci95[0] < result.loss < result.loss_ci95[1]
    assert result.loss < 0.6 * math.log(corpus.vocab_size)  # the trained weights were loaded

    prefix = evaluate_checkpoint(
        checkpoint,
        job.model,
        corpus.vocab_size,
        {"synthetic": corpus.val},
        EvalConfig(seq_len=64, batch_size=4, max_tokens_per_domain=100),
    )["synthetic"]
    assert prefix.tokens == 100


def test_find_last_checkpoint_needs_a_complete_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "checkpoint" / "step-5").mkdir(parents=True)
    (tmp_path / "checkpoint" / "step-5" / ".metadata").touch()
    (tmp_path / "checkpoint" / "step-9").mkdir()  # still being written: no .metadata yet
    assert find_last_checkpoint(tmp_path).name == "step-5"
    with pytest.raises(FileNotFoundError):
        find_last_checkpoint(tmp_path / "nothing")


def make_loader(path: Path, rank: int, world: int = 2, batch: int = 2, seq_len: int = 4) -> TokenFileDataLoader:
    config = TokenFileDataLoader.Config(dataset_path=str(path))
    return TokenFileDataLoader(config, dp_world_size=world, dp_rank=rank, seq_len=seq_len, local_batch_size=batch)


def test_loader_ranks_share_each_global_batch(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    np.arange(1001, dtype=np.uint32).tofile(path)  # 250 windows of 4 (+1) tokens
    rank0, rank1 = make_loader(path, 0), make_loader(path, 1)
    order = [k * rank0.stride % rank0.n_windows for k in range(8)]
    (in0, _), (in1, lab1) = rank0.next_batch(), rank1.next_batch()
    assert in0["input"][:, 0].tolist() == [4 * w for w in order[0:2]]
    assert in1["input"][:, 0].tolist() == [4 * w for w in order[2:4]]
    assert lab1[0].tolist() == [4 * order[2] + i for i in range(1, 5)]
    assert rank0.next_batch()[0]["input"][0, 0] == 4 * order[4]  # the next global batch follows both shares
    assert order[1] - order[0] > 10  # consecutive windows of the stream are spread apart


def test_loader_serves_every_window_once_per_pass(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    np.arange(4 * 60 + 1, dtype=np.uint32).tofile(path)
    loader = make_loader(path, rank=0, world=1, batch=3)
    starts = [int(x) for _ in range(20) for x in loader.next_batch()[0]["input"][:, 0]]
    assert sorted(starts) == [4 * w for w in range(60)]


def test_loader_state_resumes_and_wraps(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    np.arange(21, dtype=np.uint32).tofile(path)  # five windows of 4 (+1) tokens, served as 0, 3, 1, 4, 2
    loader = make_loader(path, rank=0, world=1, batch=2)
    loader.next_batch()
    resumed = make_loader(path, rank=0, world=1, batch=2)
    resumed.load_state_dict(loader.state_dict())
    assert resumed.next_batch()[0]["input"].tolist() == loader.next_batch()[0]["input"].tolist()
    assert loader.next_batch()[0]["input"].tolist() == [[8, 9, 10, 11], [0, 1, 2, 3]]


def test_job_round_trip_and_launch_command(tmp_path: Path) -> None:
    job = TrainJob(ModelConfig(dim=32), TrainConfig(steps=7), ParallelConfig(nproc_per_node=3), "tok", "t.bin", "out")
    job.save(tmp_path / "job.json")
    assert TrainJob.load(tmp_path / "job.json") == job
    command = launch_command(tmp_path / "job.json")
    assert "--nproc_per_node=3" in command and command[-2:] == ["--job", str(tmp_path / "job.json")]
    assert command[command.index("-m", command.index("torch.distributed.run")) + 1] == "training.train"
