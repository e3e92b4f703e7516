"""The launchpad's way to start a new experiment or sweep: the ``launch`` job runs ``lab materialize`` with the
overrides typed in its run config, exactly as the command line would (it records the experiment, reloads the UI's
code location so the new arms appear, and materializes them in runs of their own)."""


import subprocess
import sys

from dagster import Config, OpExecutionContext, job, op

from orchestration.config import REPO_ROOT


class LaunchConfig(Config):
    overrides: list[str] = []  # Hydra overrides, e.g. ["experiment=tiny", "mixture.weights.docs=0.1,0.3"]
    multirun: bool = False  # sweep over comma-separated values (Hydra's -m)
    name: str = ""  # the experiment's name; empty: derived from the overrides


def lab_command(config: LaunchConfig) -> list[str]:
    # Under training.parent_death: a launch run whose process is killed takes its `lab materialize` with it.
    return [sys.executable, "-m", "training.parent_death", sys.executable, "-m", "orchestration.cli", "materialize",
            *(["-m"] if config.multirun else []),
            *(["--name", config.name] if config.name else []), *config.overrides]


@op(description="Run `lab materialize` with these overrides: record the experiment, then materialize its arms.")
def lab_materialize(context: OpExecutionContext, config: LaunchConfig) -> None:
    process = subprocess.Popen(lab_command(config), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        for line in process.stdout:
            context.log.info(line.rstrip())
    finally:  # a terminated launch run takes its `lab materialize` with it
        if process.poll() is None:
            process.terminate()
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"lab materialize exited with {process.returncode}; see the log above")


@job(description="Launch an experiment or a sweep by its overrides, as `lab materialize [-m] ...` does.",
     tags={"lab/launcher": "true"})
def launch() -> None:
    lab_materialize()

