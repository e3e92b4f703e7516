"""Checkpoint policy: resume from this run's own checkpoints, else start from a parent checkpoint; when to save.

torchtitan's DCP CheckpointManager already prefers the run's own newest complete checkpoint (a step folder with
DCP's `.metadata`, which is written last, so a save cut short is never loaded) and otherwise loads
`initial_load_path`. Three things are added here: which states an initial load restores (a `weights_and_optimizer`
child keeps its own schedule, loader and step), the learning rates after any load (see `_apply_schedule`), and
extra save steps besides torchtitan's fixed interval (dense early checkpoints, see `early_checkpoint_steps`).
"""

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchtitan.components.checkpoint import DATALOADER, LR_SCHEDULER, TRAIN_STATE, CheckpointManager

from training.config import InitConfig

# The states each init mode leaves fresh; `weights` restores the model only (torchtitan's model-only load).
_FRESH_STATES = {"weights_and_optimizer": [LR_SCHEDULER, DATALOADER, TRAIN_STATE], "branch": []}


class LabCheckpointManager(CheckpointManager):
    @dataclass(kw_only=True, slots=True)
    class Config(CheckpointManager.Config):
        initial_load_exclude: list[str] = field(default_factory=list)
        """Non-model states an initial load (from initial_load_path) leaves fresh; a resume loads everything."""
        extra_steps: list[int] = field(default_factory=list)
        """Steps saved besides every `interval` steps and the last one."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.initial_load_exclude = config.initial_load_exclude
        self.extra_steps = frozenset(config.extra_steps)
        if self.extra_steps:
            _require_save_hook()

    def _load(self, step: int = -1) -> bool:
        # torchtitan applies exclude_from_loading to every load; ours applies to the initial load only, so a
        # child that was interrupted resumes all of its own state.
        initial = step == -1 and self._find_load_step() == -1
        if initial and self.initial_load_path:
            require_complete(self.initial_load_path)
        self.exclude_from_loading = self.initial_load_exclude if initial else []
        loaded = super()._load(step)
        if loaded:
            self._apply_schedule()
        return loaded

    def _should_save(self, curr_step: int, last_step: bool = False) -> bool:
        # torchtitan asks this after every step; its own rule is step 1 (optional), the interval and the last step.
        if curr_step in self.extra_steps and self.enable and not self.load_only:
            return True
        return super()._should_save(curr_step, last_step)

    def _apply_schedule(self) -> None:
        """Set each optimizer's learning rate from the LR schedule at the loaded step.

        The optimizer state carries the learning rate the saving run used next; a child with a fresh or a
        different schedule must take its own. For a plain resume the two are the same number.
        """
        for scheduler in self.states[LR_SCHEDULER].schedulers:
            for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
                group["lr"] = lr


def _require_save_hook() -> None:
    """Extra save steps override torchtitan's private `_should_save(curr_step, last_step)` (torchtitan 0.3.0):
    if a new torchtitan renames it, the override would never run and the extra checkpoints would silently be
    missing, so refuse to start instead."""
    hook = getattr(CheckpointManager, "_should_save", None)
    if hook is None or list(inspect.signature(hook).parameters)[:3] != ["self", "curr_step", "last_step"]:
        raise RuntimeError(
            "this torchtitan's CheckpointManager has no _should_save(curr_step, last_step), which "
            "training/checkpoint.py overrides for train.checkpoint_early: port LabCheckpointManager._should_save "
            "to the new save hook, or set train.checkpoint_early=0"
        )


def early_checkpoint_steps(start: int, early: int) -> list[int]:
    """Steps start+1, start+2, start+4, ... below start+early: log-spaced, dense where the loss moves fastest."""
    if early < 0:
        raise ValueError(f"train.checkpoint_early must be 0 (none) or a number of steps, got {early}")
    steps, offset = [], 1
    while offset < early:
        steps.append(start + offset)
        offset *= 2
    return steps


def start_step(init: InitConfig | None) -> int:
    """The step a run starts from: the parent's step for a branch (it keeps the step count), else 0."""
    if init is None or init.mode != "branch":
        return 0
    match = re.fullmatch(r"step-(\d+)", Path(init.checkpoint).name)
    if match is None:
        raise ValueError(f"init.checkpoint {init.checkpoint} is not a checkpoint/step-N folder")
    return int(match.group(1))


def require_complete(step_folder: str) -> None:
    """A parent checkpoint must be a finished DCP save: its `.metadata` is written last."""
    if not Path(step_folder, ".metadata").is_file():
        raise FileNotFoundError(
            f"init.checkpoint {step_folder} is not a complete DCP checkpoint (no .metadata): name the step-N folder "
            "of a finished save"
        )


def checkpoint_config(init: InitConfig | None, interval: int, early: int) -> LabCheckpointManager.Config:
    """Checkpoints under <output_dir>/checkpoint/step-N every `interval` steps, at the end and at the log-spaced
    steps of `early_checkpoint_steps`, all kept."""
    parent = {"initial_load_model_only": False}  # torchtitan's default (True) warns when there is no parent
    if init is not None:
        parent = {
            "initial_load_path": init.checkpoint,
            "initial_load_model_only": init.mode == "weights",
            "initial_load_exclude": _FRESH_STATES.get(init.mode, []),
        }
    return LabCheckpointManager.Config(
        enable=True,
        interval=interval,
        last_save_model_only=False,  # the last checkpoint must resume too, e.g. to train further or branch
        keep_latest_k=0,  # intermediate checkpoints are research data (evals, WSD branches)
        extra_steps=early_checkpoint_steps(start_step(init), early),
        **parent,
    )
