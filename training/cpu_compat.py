"""Everything torchtitan 0.3.0 needs to train on CPU ranks, in one place. Not used where CUDA is present.

torchtitan assumes an accelerator: it falls back to device type "cuda" when none is found, reads memory
statistics from the device module and all-reduces gradients with ops gloo lacks. `apply` patches exactly
those points. (The missing `torch.distributed.set_timeout` of torch 2.13 is not CPU-specific: train.py shims it.)
"""

import os
import platform
import resource
import sys
from types import SimpleNamespace
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule


def needed() -> bool:
    return not torch.cuda.is_available()


class _CpuDeviceModule:
    """torch.cpu, plus the torch.cuda-style memory calls torchtitan's metrics make.

    Memory is the process's peak resident set size: a high-water mark the OS cannot reset, so torchtitan's
    per-interval "peak" reads as the peak so far.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return platform.processor() or "cpu"

    @staticmethod
    def get_device_properties(device: Any = None) -> SimpleNamespace:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return SimpleNamespace(total_memory=total, name="cpu")

    @staticmethod
    def memory_stats(device: Any = None) -> dict[str, int]:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is in KiB on Linux
        return {"active_bytes.all.peak": peak, "reserved_bytes.all.peak": peak}

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        pass

    @staticmethod
    def empty_cache() -> None:
        pass


def _force_cpu_device() -> None:
    from torchtitan.tools import utils

    cpu = _CpuDeviceModule()
    previous = utils.device_module
    utils.device_type, utils.device_module = "cpu", cpu
    # Modules imported before this point copied the names with `from torchtitan.tools.utils import ...`.
    for name, module in list(sys.modules.items()):
        if not name.startswith("torchtitan."):
            continue
        if getattr(module, "device_type", None) == "cuda":
            module.device_type = "cpu"
        if getattr(module, "device_module", None) is previous:
            module.device_module = cpu


def _sum_reductions(parallelize_fn: Any) -> Any:
    """Wrap a torchtitan parallelize function so FSDP reduces gradients with plain sums.

    torchtitan turns FSDP's gradient averaging off (it divides the loss by the global token count), which
    FSDP then implements with a pre-multiplied-sum reduce op that gloo does not have.
    """

    def parallelize(model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        model = parallelize_fn(model, **kwargs)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_force_sum_reduction_for_comms(True)
        return model

    return parallelize


def apply(trainer_config: Any) -> None:
    """Patch torchtitan for CPU ranks and adjust `trainer_config` (a torchtitan Trainer.Config) in place."""
    _force_cpu_device()
    spec = trainer_config.model_spec
    spec.parallelize_fn = _sum_reductions(spec.parallelize_fn)
    # The spmd_types backend (torchtitan's default) does not run FSDP over gloo; DTensor does.
    trainer_config.parallelism.spmd_backend = "partial_dtensor"
    trainer_config.training.disable_cuda_graphs = True
    trainer_config.comm.trace_buf_size = 0  # the flight recorder is NCCL's
