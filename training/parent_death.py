"""Training processes that die with the process that started them, so a killed run leaves no training behind.

The orchestrating process runs torchrun, and torchrun runs one process per rank. A parent killed by SIGKILL cannot
tell its children; they are adopted by init and go on training, writing into the run's partial output. Linux's
``prctl(PR_SET_PDEATHSIG, signal)`` asks the kernel to send ``signal`` to a process when its parent dies. It is set

- for torchrun, by this module used as a wrapper (``launch_command`` puts it in front of torchrun):
  ``python -m training.parent_death COMMAND...`` sets SIGTERM, then execs COMMAND (the setting survives exec).
  SIGTERM lets torchrun stop its ranks itself;
- for each rank, by training.train at its start, with SIGKILL: a rank without its torchrun has nothing left to do.

A parent that dies before the call sends nothing: its child has already been adopted. So after the call the
process compares ``os.getppid()`` with the parent it expects, and stops itself if they differ.

A signal that the starting process ignores or blocks stays ignored or blocked in its children, through fork and
exec; the kernel's SIGTERM would then be lost and torchrun would outlive the run. So the wrapper restores SIGTERM's
default action and unblocks it first (SIGKILL can be neither ignored nor blocked).

"Parent" means the thread that started the process: a child started from a thread that ends before the child does
would be killed then. Dagster's PipesSubprocessClient and torchrun start their children from a thread that waits
for them.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# The wrapper's pid, which torchrun keeps when the wrapper execs it: the parent each rank expects.
LAUNCHER_PID = "LAB_LAUNCHER_PID"


def die_with_parent(signal_number: int, expected_parent: int) -> None:
    """Have the kernel send ``signal_number`` to this process when its parent dies; at once if it already has."""
    if not sys.platform.startswith("linux"):
        return  # no PR_SET_PDEATHSIG elsewhere: there children of a killed run still outlive it
    if signal_number != signal.SIGKILL:  # inherited from the parent: ignored or blocked, it would be lost
        signal.signal(signal_number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal_number})
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != expected_parent:  # the parent died before the call: adopted, and nobody will signal us
        os.kill(os.getpid(), signal_number)


def rank_dies_with_launcher() -> None:
    """In a training rank: be killed when torchrun dies. Without the wrapper, the current parent is taken for it."""
    launcher = os.environ.get(LAUNCHER_PID)
    die_with_parent(signal.SIGKILL, int(launcher) if launcher else os.getppid())


def main(command: list[str]) -> None:
    parent = os.getppid()  # first of all: the parent may die at any moment, and then getppid() names another
    if not command:
        sys.exit("usage: python -m training.parent_death COMMAND [ARGUMENT...]")
    die_with_parent(signal.SIGTERM, parent)
    os.environ[LAUNCHER_PID] = str(os.getpid())
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
