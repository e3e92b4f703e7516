"""The checkpoint's training on Slurm, through Dagster Pipes: the rendered batch script, submitted and waited for.

``cluster_launch.slurm_script`` renders the job (one torchrun per node); this module submits it with
``sbatch --parsable`` and polls ``scontrol show job`` until it ends (``sacct`` needs accounting, which a cluster
may not run). Pipes goes through files in ``launcher.slurm.job_dir``, the folder every node sees: Dagster writes the
context there and tails the messages file that training's rank 0 appends to (``training.tracking``), so the run's
log shows the training steps as a local run does. The bootstrap variables that name those files reach the ranks
through the environment sbatch exports (its default, ``--export=ALL``), as the credentials do; neither is written
into the script. The job's own output (its log, ``<job_dir>/<name>-<job id>.out``) is copied to this process's
stdout as it grows, as a local run's torchrun output is.

A job must not outlive the run that submitted it:

- a run interrupted (terminated from the UI, SIGTERM, Ctrl-C: Dagster raises ``DagsterExecutionInterruptedError``
  in the asset) cancels the job itself, with ``scancel``;
- a run killed (SIGKILL) cannot; a small watcher, started beside the job, holds a pipe from the run's process and
  cancels the job when the pipe closes without the word "done", which the run writes once the job has ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dagster import AssetExecutionContext, PipesFileContextInjector, PipesFileMessageReader, open_pipes_session

from orchestration.cluster_launch import LauncherConfig, check_launch, slurm_script
from orchestration.config import REPO_ROOT
from training.job import TrainJob

POLL_SECONDS = 2.0
# How long scontrol may keep failing (slurmctld restarting, a network blip) before the wait gives up.
CONTROLLER_PATIENCE_SECONDS = 60.0
# Job states after which nothing more runs (Slurm's JOB_STATE names; COMPLETING still runs its epilog).
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "SPECIAL_EXIT"}
# The watcher: cancel job $1 unless "done" arrives on stdin before it closes.
WATCHER = 'read -r word; [ "$word" = done ] || scancel "$1"'
LOG_TAIL_LINES = 30


class SlurmJobError(RuntimeError):
    """The Slurm job failed, or could not be submitted or followed."""


def slurm(*command: str, **kwargs) -> subprocess.CompletedProcess:
    """A Slurm client command; not installed is a clear error."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)
    except FileNotFoundError as error:
        raise SlurmJobError(f"launcher=slurm: {command[0]} is not on PATH; run lab where the Slurm clients are "
                            "(a login node), or choose launcher=local") from error


def submit(script: Path, env: dict[str, str]) -> str:
    """``sbatch --parsable``: the job id. The job starts in the repository root, as the local launch does."""
    result = slurm("sbatch", "--parsable", str(script), env=env, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise SlurmJobError(f"sbatch refused {script}: {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"


def job_state(job_id: str) -> tuple[str, str] | None:
    """The job's state and exit code from slurmctld; None while the controller does not answer."""
    result = slurm("scontrol", "show", "job", "-o", job_id)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:  # its record expired (MinJobAge) before we looked
            raise SlurmJobError(f"Slurm job {job_id} is no longer known to slurmctld; its end state is lost")
        return None
    fields = dict(word.split("=", 1) for word in result.stdout.split() if "=" in word)
    return fields["JobState"], fields.get("ExitCode", "")


class LogEcho:
    """Copies what the job's log gained since the last look to this process's stdout."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def __call__(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self.offset)
            new = log.read()
        self.offset += len(new)
        sys.stdout.write(new.decode(errors="replace"))
        sys.stdout.flush()


def wait(job_id: str, echo: LogEcho, report: Callable[[str], None]) -> tuple[str, str]:
    """Poll until the job has ended: its last state and exit code. Each new state is reported (PENDING, RUNNING)."""
    answered, last = time.monotonic(), ""
    while True:
        echo()
        state = job_state(job_id)
        if state is None:
            if time.monotonic() - answered > CONTROLLER_PATIENCE_SECONDS:
                raise SlurmJobError(f"slurmctld did not answer `scontrol show job {job_id}` for "
                                    f"{CONTROLLER_PATIENCE_SECONDS:.0f} s")
        else:
            answered = time.monotonic()
            if state[0] != last:
                last = state[0]
                report(f"Slurm job {job_id}: {last}")
            if last in ENDED:
                echo()
                return state
        time.sleep(POLL_SECONDS)


def log_tail(path: Path) -> str:
    if not path.exists():
        return "(no log was written: the job may not have started)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])


def run_on_slurm(context: AssetExecutionContext, launcher: LauncherConfig, job: TrainJob, name: str) -> str:
    """Train ``job`` as Slurm job ``name`` through Pipes; its job id. A failed job is a ``SlurmJobError``."""
    check_launch(launcher, job)
    job_dir = Path(launcher.slurm.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    script = job_dir / f"{name}.sbatch"
    script.write_text(slurm_script(launcher.slurm, job, name))
    with open_pipes_session(context=context,
                            context_injector=PipesFileContextInjector(str(job_dir / f"{name}.pipes-context.json")),
                            message_reader=PipesFileMessageReader(str(job_dir / f"{name}.pipes-messages.jsonl")),
                            ) as session:
        job_id = submit(script, {**os.environ, **session.get_bootstrap_env_vars()})
        log = job_dir / f"{name}-{job_id}.out"  # the script's --output, %x-%j
        context.log.info(f"Slurm job {job_id} ({name}) submitted: script {script}, log {log}")
        watcher = subprocess.Popen(["sh", "-c", WATCHER, "watcher", job_id], stdin=subprocess.PIPE, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        settled = False  # the job has ended, or this process cancelled it: the watcher has nothing left to do
        try:
            state, exit_code = wait(job_id, LogEcho(log), context.log.info)
            settled = True
        except BaseException:  # interrupted (terminated, SIGTERM, Ctrl-C) or lost: the job goes with the run
            settled = slurm("scancel", job_id).returncode == 0
            context.log.info(f"Slurm job {job_id} cancelled (scancel): its run stopped before it ended")
            raise
        finally:
            watcher.communicate("done\n" if settled else "")
    if state != "COMPLETED":
        raise SlurmJobError(f"Slurm job {job_id} ({name}) ended {state}, exit code {exit_code}; its log: {log}\n"
                            f"{log_tail(log)}")
    return job_id
