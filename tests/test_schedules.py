"""LR schedules: endpoints, shapes, continuity, the default against torchtitan's own WSD, and resume."""

from pathlib import Path

import pytest
import torch
from torchtitan.components.optimizer import LRSchedulersContainer

from evaluation.plots import plot_lr_schedule
from training.config import TrainConfig
from training.lr_schedulers import LabLRSchedulers
from training.schedules import SCHEDULES, Schedule, lr_factor

TOTAL = 200


def factors(s: Schedule) -> list[float]:
    return [lr_factor(s, step) for step in range(s.total_steps + 1)]


def sgd_optimizers(n: int = 2) -> list[torch.optim.Optimizer]:
    return [torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5) for _ in range(n)]


def lrs(container: LRSchedulersContainer) -> list[float]:
    return [s.get_last_lr()[0] for s in container]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_warmup_endpoints_and_continuity(name: str) -> None:
    s = Schedule(name, TOTAL, warmup_steps=10, min_lr_ratio=0.1, decay_fraction=0.25, cooldown_steps=40)
    f = factors(s)
    assert f[0] == pytest.approx(0.1)  # (0 + 1) / 10 of the peak on the first step
    assert f[9] == pytest.approx(1.0)  # the peak at the end of the warmup
    assert f[-1] == pytest.approx(0.1)  # every schedule here ends at min_lr_ratio
    assert min(f) >= 0.1 - 1e-12 and max(f) <= 1.0 + 1e-12
    # No jumps: no step changes the factor by more than one warmup increment (0.1) or one decay increment.
    assert max(abs(b - a) for a, b in zip(f, f[1:], strict=False)) <= 0.1 + 1e-9


def test_wsd_is_stable_then_decays_over_its_fraction() -> None:
    f = factors(Schedule("wsd", TOTAL, warmup_steps=10, min_lr_ratio=0.0, decay_fraction=0.2))
    assert all(x == 1.0 for x in f[10:160])  # stable until the final 20% (40 steps)
    assert f[160] == 1.0 and f[180] == pytest.approx(0.5) and f[200] == 0.0


def test_decay_shapes_order_and_cosine_midpoint() -> None:
    at_quarter = {
        shape: lr_factor(Schedule("wsd", 100, decay_fraction=1.0, decay_shape=shape), 25)
        for shape in ("cosine", "linear", "1-sqrt")
    }
    assert at_quarter["linear"] == pytest.approx(0.75)
    assert at_quarter["1-sqrt"] == pytest.approx(0.5)
    assert at_quarter["cosine"] == pytest.approx(0.5 * (1 + 2**-0.5))
    assert lr_factor(Schedule("cosine", 110, warmup_steps=10), 60) == pytest.approx(0.5)  # half way after warmup


def test_constant_is_infinite_unless_cooled_down() -> None:
    assert set(factors(Schedule("constant", TOTAL, warmup_steps=5))[5:]) == {1.0}
    f = factors(Schedule("constant", TOTAL, min_lr_ratio=0.0, cooldown_steps=50, decay_shape="1-sqrt"))
    assert set(f[:150]) == {1.0} and f[-1] == 0.0 and 0.0 < f[175] < 0.5


def test_rewarming_starts_from_the_given_ratio() -> None:
    s = Schedule("cosine", TOTAL, warmup_steps=20, warmup_start_ratio=0.1, min_lr_ratio=0.1)
    f = factors(s)
    assert f[0] == pytest.approx(0.1 + 0.9 / 20) and f[19] == pytest.approx(1.0)
    assert f[0] < f[10] < f[19] and f[20] == pytest.approx(1.0, abs=1e-3)


def test_default_is_torchtitans_warmup_stable_decay() -> None:
    """The demo's schedule is unchanged: 20 warmup steps, final 20% linear down to 0.1."""
    t = TrainConfig()
    ours = LabLRSchedulers.config_from(t).build(optimizers=sgd_optimizers(1), training_steps=t.steps)
    theirs = LRSchedulersContainer.Config(
        warmup_steps=20, decay_ratio=0.2, decay_type="linear", min_lr_factor=0.1
    ).build(optimizers=sgd_optimizers(1), training_steps=t.steps)
    for _ in range(t.steps + 1):
        assert lrs(ours) == pytest.approx(lrs(theirs), rel=1e-12)
        ours.step()
        theirs.step()


def test_resumed_scheduler_continues_the_schedule() -> None:
    config = LabLRSchedulers.config_from(TrainConfig(schedule="cosine", steps=100, warmup_steps=10))
    uninterrupted = config.build(optimizers=sgd_optimizers(), training_steps=100)
    interrupted = config.build(optimizers=sgd_optimizers(), training_steps=100)
    for _ in range(37):
        uninterrupted.step()
        interrupted.step()
    state = interrupted.state_dict()
    resumed = config.build(optimizers=sgd_optimizers(), training_steps=100)
    assert lrs(resumed) != lrs(uninterrupted)  # a fresh scheduler is back at the warmup
    resumed.load_state_dict(state)
    for _ in range(63):
        assert lrs(resumed) == lrs(uninterrupted)
        resumed.step()
        uninterrupted.step()
    assert lrs(resumed) == pytest.approx([0.5 * 0.1] * 2)  # the end of the schedule: min_lr_ratio * lr


def test_a_run_shorter_than_its_warmup_warms_up_throughout() -> None:
    s = Schedule.from_train(TrainConfig(steps=8))  # the default warmup is 20 steps
    assert s.warmup_steps == 8 and factors(s)[7] == 1.0


def test_bad_names_list_the_choices() -> None:
    with pytest.raises(ValueError, match="cosine, linear, wsd, constant"):
        Schedule("exponential", 10)
    with pytest.raises(ValueError, match="1-sqrt"):
        Schedule("wsd", 10, decay_shape="sqrt")


def test_plot_lr_schedule_writes_a_png(tmp_path: Path) -> None:
    path = plot_lr_schedule(TrainConfig(steps=50, warmup_steps=5), tmp_path / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
