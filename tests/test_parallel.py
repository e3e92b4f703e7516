"""FSDP, tensor parallelism and both together give the single-rank losses: torchtitan's parallelize_llama on gloo.

All runs start from one seed checkpoint (the initial weights, written unsharded by one rank): sharded runs draw
their random initialisation per shard, so without it they would start from other weights. The launch command
for several nodes is checked as a command; it cannot run here.
"""

import re
import sys
from pathlib import Path

import pytest
from tiny_training import REPO, Corpus, finish, make_corpus, start_job, step_losses, tiny_job, write_seed_checkpoint

from training.config import InitConfig, ModelConfig, ParallelConfig, TrainConfig
from training.job import TrainJob, launch_command

LAYOUTS = {  # name: (ranks, FSDP degree, TP degree)
    "single": (1, 1, 1),
    "fsdp": (2, 2, 1),
    "tp": (2, 1, 2),
    "fsdp_x_tp": (4, 2, 2),
}


@pytest.fixture(scope="module")
def layout_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[int, float], str]]:
    """Each layout's per-step losses over 20 steps and its rank-0 log, all from the same initial weights."""
    root = tmp_path_factory.mktemp("layouts")
    corpus: Corpus = make_corpus(root)
    seed = write_seed_checkpoint(tiny_job(corpus, root / "seed", steps=20, nproc=1))
    runs = {}
    for name, (ranks, dp, tp) in LAYOUTS.items():
        parallel = ParallelConfig(nproc_per_node=ranks, dp_shard=dp, tp=tp)
        job = tiny_job(corpus, root / name, steps=20, parallel=parallel, init=InitConfig(str(seed), "weights"))
        log = finish(start_job(job))
        runs[name] = (step_losses(root / name), log)
    return runs


@pytest.mark.parametrize("layout", ["fsdp", "tp", "fsdp_x_tp"])
def test_layout_matches_single_rank_at_every_step(layout: str, layout_runs: dict) -> None:
    ranks, dp, tp = LAYOUTS[layout]
    losses, log = layout_runs[layout]
    assert re.search(rf"dp_shard={dp}, cp=1, tp={tp}", log), "torchtitan did not build the asked-for mesh"
    single, _ = layout_runs["single"]
    assert sorted(losses) == sorted(single) == list(range(1, 21))
    for step, loss in losses.items():
        # Sharded sums add in another order: equal up to float32 rounding, not bitwise.
        assert loss == pytest.approx(single[step], rel=1e-5), f"step {step}"
    assert single[20] < 0.6 * single[1]  # it trained


def command_for(tmp_path: Path, **parallel: int | str) -> list[str]:
    job = TrainJob(ModelConfig(), TrainConfig(), ParallelConfig(**parallel), "tok", "t.bin", "out")
    job.save(tmp_path / "job.json")
    return launch_command(tmp_path / "job.json")


def test_one_node_gets_a_private_rendezvous(tmp_path: Path) -> None:
    command = command_for(tmp_path, nproc_per_node=8)
    assert command[:6] == [sys.executable, "-m", "training.parent_death", sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in command and "--nproc_per_node=8" in command
    assert not any(flag.startswith(("--nnodes", "--rdzv")) for flag in command)


def test_several_nodes_share_the_configured_rendezvous(tmp_path: Path) -> None:
    command = command_for(tmp_path, nproc_per_node=8, nnodes=4, rdzv_endpoint="node0:29400", rdzv_id="run-7")
    flags = command[command.index("torch.distributed.run") + 1 : command.index("training.train") - 1]
    assert flags == [
        "--nnodes=4",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=node0:29400",
        "--rdzv_id=run-7",
        "--nproc_per_node=8",
        "--local-ranks-filter=0",
    ]
    static = command_for(
        tmp_path, nnodes=2, rdzv_backend="static", rdzv_endpoint="node0:29400", rdzv_id="r", node_rank=1
    )
    assert "--node_rank=1" in static and "--standalone" not in static


def test_several_nodes_without_a_rendezvous_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parallel.rdzv_endpoint and parallel.rdzv_id"):
        command_for(tmp_path, nnodes=2)


def test_seed_checkpoint_runs_on_one_rank(tmp_path: Path) -> None:
    command_for(tmp_path, nproc_per_node=8, nnodes=2, rdzv_endpoint="node0:29400", rdzv_id="r")
    command = launch_command(tmp_path / "job.json", seed_checkpoint=True)
    assert "--nproc_per_node=1" in command and "--standalone" in command and command[-1] == "--seed-checkpoint"


def test_layout_that_does_not_fill_the_ranks_is_a_clear_error() -> None:
    from training.train import data_parallel_degree

    job = TrainJob(ModelConfig(n_heads=6, n_kv_heads=3), TrainConfig(), ParallelConfig(tp=3), "tok", "t.bin", "out")
    with pytest.raises(ValueError, match="1 data-parallel x 3 tensor-parallel ranks .* do not fill the 4 ranks"):
        data_parallel_degree(job, world_size=4)
    job.model, job.parallel = ModelConfig(n_heads=4, n_kv_heads=2), ParallelConfig(dp_shard=2, tp=2)
    assert data_parallel_degree(job, world_size=4) == 2
    job.model = ModelConfig(n_heads=4, n_kv_heads=1)
    with pytest.raises(ValueError, match=r"model.n_kv_heads \(1\) must be divisible by parallel.tp \(2\)"):
        data_parallel_degree(job, world_size=4)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "conf" / "parallel").glob("*.yaml")))
def test_parallel_presets_fit_their_ranks_and_device(preset: str) -> None:
    from orchestration.compose import compose_experiment
    from training.train import data_parallel_degree

    cfg, _ = compose_experiment([f"parallel={preset}"])
    p = cfg.parallel
    job = TrainJob(cfg.model, cfg.train, p, "tok", "t.bin", "out")
    dp = data_parallel_degree(job, p.nnodes * p.nproc_per_node)
    assert cfg.train.global_batch_size % dp == 0
    gpu = preset.startswith("gpu")
    assert (p.compile, cfg.train.dtype) == ((True, "bfloat16") if gpu else (False, "float32"))
