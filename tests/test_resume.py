"""Faults and lineage on two CPU ranks: a run killed by SIGKILL resumes bitwise; children start from a parent.

One uninterrupted run (20 steps, a checkpoint every 5 and dense early ones at 1, 2, 4) is the reference and the
parent. The same job, killed
mid-way with SIGKILL of rank 1 and rerun on its folder, must give the reference's loss at every step; so must a
`branch` child from the parent's step 10; `weights` children must start where the parent ended.
"""

import shutil
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
from tiny_training import Corpus, make_corpus, run_job, start_job, step_losses, tiny_job

from evaluation.perplexity import list_checkpoints
from training.checkpoint import LabCheckpointManager, early_checkpoint_steps, require_complete, start_step
from training.config import InitConfig
from training.job import TrainJob, check_init

INTERVAL = 5


@dataclass
class Lab:
    corpus: Corpus
    root: Path
    parent: TrainJob
    parent_losses: dict[int, float]

    def job(self, name: str, steps: int = 20, init: InitConfig | None = None) -> TrainJob:
        return replace(self.parent, output_dir=str(self.root / name), train=replace(self.parent.train, steps=steps),
                       init=init)

    def parent_step(self, step: int) -> str:
        return str(Path(self.parent.output_dir, "checkpoint", f"step-{step}"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root = tmp_path_factory.mktemp("resume")
    corpus = make_corpus(root)
    parent = tiny_job(corpus, root / "parent", steps=20)
    parent.train.checkpoint_interval = INTERVAL
    parent.train.checkpoint_early = INTERVAL  # also saves steps 1, 2 and 4; children inherit it
    run_job(parent)
    return Lab(corpus, root, parent, step_losses(root / "parent"))


def logged_steps(output_dir: Path) -> int:
    path = Path(output_dir, "train_steps.jsonl")
    return len(path.read_text().splitlines()) if path.exists() else 0


def kill_rank_after(job: TrainJob, rank: int, min_step: int) -> None:
    """Start `job`, SIGKILL one rank once step `min_step` is logged (after its first checkpoint), wait for the end."""
    proc = start_job(job)
    deadline = time.monotonic() + 120
    while logged_steps(Path(job.output_dir)) < min_step:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run never reached the step to kill it at"
        time.sleep(0.02)
    workers = psutil.Process(proc.pid).children(recursive=True)
    victim = next(w for w in workers if w.environ().get("RANK") == str(rank))
    victim.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0  # torchrun reports the lost rank and stops the others


def test_dense_early_checkpoints_are_saved(lab: Lab) -> None:
    assert sorted(list_checkpoints(lab.parent.output_dir)) == [1, 2, 4, 5, 10, 15, 20]


def test_early_checkpoint_schedule() -> None:
    assert early_checkpoint_steps(0, 20) == [1, 2, 4, 8, 16]
    assert early_checkpoint_steps(0, 16) == [1, 2, 4, 8]  # below the horizon: step 16 is the interval's
    assert early_checkpoint_steps(200, 5) == [201, 202, 204]
    assert early_checkpoint_steps(0, 0) == [] and early_checkpoint_steps(0, 1) == []
    with pytest.raises(ValueError, match="checkpoint_early"):
        early_checkpoint_steps(0, -1)
    assert start_step(InitConfig("/runs/p/checkpoint/step-200", "branch")) == 200
    assert start_step(InitConfig("/runs/p/checkpoint/step-200", "weights")) == 0  # a new run from step 0
    assert start_step(None) == 0


def test_sigkilled_run_resumes_bitwise(lab: Lab) -> None:
    job = lab.job("killed")
    kill_rank_after(job, rank=1, min_step=INTERVAL + 1)
    out = Path(job.output_dir)
    saved = sorted(list_checkpoints(out))
    assert saved and saved[-1] < 20 and logged_steps(out) < 20
    # A save cut short by the kill: DCP writes .metadata last, so the folder has the shards but no .metadata.
    cut = out / "checkpoint" / f"step-{saved[-1] + INTERVAL}"
    if not cut.exists():
        shutil.copytree(out / "checkpoint" / f"step-{saved[-1]}", cut, ignore=shutil.ignore_patterns(".metadata"))

    resumed = run_job(job)
    assert resumed["loss_curve"][0][0] == saved[-1] + 1  # from the last complete checkpoint, not from scratch
    assert (cut / ".metadata").is_file()  # the cut-short step was trained again and saved whole
    assert step_losses(out) == lab.parent_losses  # every step, bitwise


def test_branch_continues_the_parent_exactly_and_then_resumes_its_own(lab: Lab) -> None:
    branch = lab.job("branch", init=InitConfig(lab.parent_step(10), "branch"))
    summary = run_job(branch)
    assert [step for step, _ in summary["loss_curve"]] == list(range(11, 21))
    assert step_losses(Path(branch.output_dir)) == {s: v for s, v in lab.parent_losses.items() if s > 10}
    assert sorted(list_checkpoints(branch.output_dir)) == [11, 12, 14, 15, 20]  # early steps count from the branch

    # Rerun longer: it resumes from its own step 20, not from the parent's step 10 again, and no longer needs the
    # parent (here: a parent output that is gone).
    gone = InitConfig(str(lab.root / "gone" / "checkpoint" / "step-10"), "branch")
    longer = replace(branch, train=replace(branch.train, steps=22), init=gone)
    assert [step for step, _ in run_job(longer)["loss_curve"]] == [21, 22]


def test_weights_children_start_where_the_parent_ended(lab: Lab) -> None:
    losses = {}
    for mode in ("weights", "weights_and_optimizer"):
        child = lab.job(mode, steps=3, init=InitConfig(lab.parent_step(20), mode))
        assert [step for step, _ in run_job(child)["loss_curve"]] == [1, 2, 3]  # a new run from step 0
        losses[mode] = step_losses(Path(child.output_dir))
    first, parent_first, parent_last = losses["weights"][1], lab.parent_losses[1], lab.parent_losses[20]
    assert abs(first - parent_last) < 0.1 * parent_last and first < 0.6 * parent_first
    # The same weights on the same first batch (the loader starts afresh in both), then other AdamW moments.
    assert losses["weights_and_optimizer"][1] == first
    assert losses["weights_and_optimizer"][3] != losses["weights"][3]


def test_a_load_takes_the_learning_rate_from_the_schedule() -> None:
    # A loaded optimizer state carries the parent's learning rate; the child's own schedule must win.
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.25)
    optimizer.param_groups[0]["lr"] = 0.5  # what load_state_dict left there
    manager = LabCheckpointManager(
        LabCheckpointManager.Config(enable=True, keep_latest_k=0),
        dataloader=None,
        model_parts=[model],
        optimizers=optimizer,
        lr_schedulers=SimpleNamespace(schedulers=[scheduler]),
        states={},
        sd_adapter=None,
    )
    manager._apply_schedule()
    assert optimizer.param_groups[0]["lr"] == 0.25


def test_init_from_an_incomplete_checkpoint_is_a_clear_error(lab: Lab, tmp_path: Path) -> None:
    shutil.copytree(lab.parent_step(5), tmp_path / "step-5", ignore=shutil.ignore_patterns(".metadata"))
    with pytest.raises(FileNotFoundError, match="not a complete DCP checkpoint"):
        require_complete(str(tmp_path / "step-5"))
    require_complete(lab.parent_step(5))
    with pytest.raises(ValueError, match="init.mode 'everything' is not one of weights, weights_and_optimizer"):
        check_init(InitConfig(lab.parent_step(5), "everything"))
    with pytest.raises(ValueError, match="absolute path"):
        check_init(InitConfig("parent/checkpoint/step-5", "weights"))
