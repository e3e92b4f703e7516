"""torchtitan's LR scheduler container driven by a training.schedules schedule."""

import functools
from dataclasses import dataclass, field
from typing import Any

from torchtitan.components.optimizer import LRSchedulersContainer

from training.config import TrainConfig
from training.schedules import Schedule, lr_factor


class LabLRSchedulers(LRSchedulersContainer):
    """torchtitan's container, unchanged but for the LR function: the same LambdaLR per optimizer and the same
    checkpointed state (`last_epoch`), so a resumed run recomputes the LR at the step it left off."""

    @dataclass(kw_only=True, slots=True)
    class Config(LRSchedulersContainer.Config):
        # The inherited fields are torchtitan's WSD parameters; only warmup_steps is read (by the Trainer's log).
        schedule: Schedule = field(default_factory=lambda: Schedule("wsd", total_steps=1))

        def build(self, *, optimizers: Any, training_steps: int) -> "LabLRSchedulers":
            return LabLRSchedulers(optimizers, functools.partial(lr_factor, self.schedule))

    @classmethod
    def config_from(cls, t: TrainConfig) -> "LabLRSchedulers.Config":
        schedule = Schedule.from_train(t)
        return cls.Config(schedule=schedule, warmup_steps=schedule.warmup_steps, total_steps=schedule.total_steps)
