"""Learning-rate schedules by name: cosine, linear, wsd (warmup-stable-decay), constant (infinite, optional cooldown).

Each schedule is a pure function of the step returning a factor of the peak LR. `step` counts the optimizer
steps already taken (torchtitan's LambdaLR convention): training step s runs with the factor at s - 1, and the
factor at `total_steps` is the end of the schedule. Every schedule starts with a linear warmup from
`warmup_start_ratio` to 1; for rewarming in continual pretraining, a child run starts its step count at 0 from the
parent's weights and warms up again to its own peak (from ~0 by default, or from the parent's final LR ratio).
Pure Python (no torch): the orchestration process plots schedules (evaluation.plots) without loading the training
stack; training.lr_schedulers plugs them into torchtitan.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

from training.config import TrainConfig

DECAY_SHAPES: dict[str, Callable[[float], float]] = {  # progress 0 -> 1 mapped to a factor 1 -> 0
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
    "1-sqrt": lambda p: 1.0 - math.sqrt(p),
}


@dataclass(frozen=True)
class Schedule:
    """One schedule, resolved to steps."""

    name: str
    total_steps: int
    warmup_steps: int = 0
    warmup_start_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    decay_fraction: float = 0.2  # wsd: share of total_steps spent decaying
    decay_shape: str = "linear"  # wsd and the constant schedule's cooldown
    cooldown_steps: int = 0  # constant: final steps spent decaying; 0 = constant to the end

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown LR schedule {self.name!r}; choose one of {', '.join(SCHEDULES)}")
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(f"unknown decay shape {self.decay_shape!r}; choose one of {', '.join(DECAY_SHAPES)}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} must lie in [0, total steps {self.total_steps}]")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction {self.decay_fraction} must lie in [0, 1]")

    @classmethod
    def from_train(cls, t: TrainConfig) -> "Schedule":
        """The schedule of a run's TrainConfig: the one mapping from our config keys to a schedule.

        A warmup longer than the run is cut to the run's length (as torchtitan does), so a short probe run of a
        config still starts.
        """
        total_steps = t.schedule_steps or t.steps
        return cls(
            name=t.schedule,
            total_steps=total_steps,
            warmup_steps=min(t.warmup_steps, total_steps),
            warmup_start_ratio=t.warmup_start_ratio,
            min_lr_ratio=t.min_lr_ratio,
            decay_fraction=t.decay_fraction,
            decay_shape=t.decay_shape,
            cooldown_steps=t.cooldown_steps,
        )


def _decay(s: Schedule, step: int, decay_steps: int, shape: str) -> float:
    """1 until the final `decay_steps` steps, then down to min_lr_ratio along `shape`."""
    decay_steps = min(decay_steps, s.total_steps - s.warmup_steps)
    if decay_steps <= 0:
        return 1.0
    progress = min(max((step - (s.total_steps - decay_steps)) / decay_steps, 0.0), 1.0)
    return s.min_lr_ratio + (1.0 - s.min_lr_ratio) * DECAY_SHAPES[shape](progress)


def cosine(s: Schedule, step: int) -> float:
    return _decay(s, step, s.total_steps - s.warmup_steps, "cosine")


def linear(s: Schedule, step: int) -> float:
    return _decay(s, step, s.total_steps - s.warmup_steps, "linear")


def wsd(s: Schedule, step: int) -> float:
    return _decay(s, step, round(s.total_steps * s.decay_fraction), s.decay_shape)


def constant(s: Schedule, step: int) -> float:
    return _decay(s, step, s.cooldown_steps, s.decay_shape)


SCHEDULES: dict[str, Callable[[Schedule, int], float]] = {
    "cosine": cosine,
    "linear": linear,
    "wsd": wsd,
    "constant": constant,
}


def lr_factor(s: Schedule, step: int) -> float:
    """The factor of the peak LR after `step` optimizer steps: the warmup ramp, then the named schedule."""
    if step < s.warmup_steps:
        return s.warmup_start_ratio + (1.0 - s.warmup_start_ratio) * (step + 1) / s.warmup_steps
    return SCHEDULES[s.name](s, step)

