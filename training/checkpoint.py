"""Checkpoint loading policy: resume from this run's own checkpoints, else start from a parent checkpoint.

torchtitan's DCP CheckpointManager already prefers the run's own newest complete checkpoint (a step folder with
DCP's `.metadata`, which is written last, so a save cut short is never loaded) and otherwise loads
`initial_load_path`. Two things are added here: which states an initial load restores (a `weights_and_optimizer`
child keeps its own schedule, loader and step), and the learning rates after any load (see `_apply_schedule`).
"""

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

    def __init__(self, config: Config, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.initial_load_exclude = config.initial_load_exclude

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

    def _apply_schedule(self) -> None:
        """Set each optimizer's learning rate from the LR schedule at the loaded step.

        The optimizer state carries the learning rate the saving run used next; a child with a fresh or a
        different schedule must take its own. For a plain resume the two are the same number.
        """
        for scheduler in self.states[LR_SCHEDULER].schedulers:
            for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
                group["lr"] = lr


def require_complete(step_folder: str) -> None:
    """A parent checkpoint must be a finished DCP save: its `.metadata` is written last."""
    if not Path(step_folder, ".metadata").is_file():
        raise FileNotFoundError(
            f"init.checkpoint {step_folder} is not a complete DCP checkpoint (no .metadata): name the step-N folder "
            "of a finished save"
        )


def checkpoint_config(init: InitConfig | None, interval: int) -> LabCheckpointManager.Config:
    """Checkpoints under <output_dir>/checkpoint/step-N every `interval` steps and at the end, all kept."""
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
        **parent,
    )
