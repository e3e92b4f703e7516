"""File locks for the short critical sections of processes that share one lab home.

``flock`` locks belong to an open file, so they are released when the holder closes it or dies (even by SIGKILL):
a crashed process never leaves a lock behind. They hold across processes on one host and, on most network file
systems (NFS v4, Lustre with flock), across hosts. Lock files are never deleted: removing a lock file while another
process waits on it would let a third process lock a new file of the same name.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; waits while another holds it.

    Not reentrant: a process that takes the same lock again inside the block waits for itself forever.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def initialize_once(marker: Path, initialize: Callable[[], None], creates: Path) -> None:
    """Run ``initialize``, which creates ``creates``, unless ``marker`` says it already ran; of several processes at
    once, one runs it and the others wait for it.

    The marker is written only after ``initialize`` returns, so a crash part-way means the next process runs it
    again (``initialize`` must cope with its own half-done work). Once it exists, callers skip the lock entirely;
    if ``creates`` was deleted since, the marker is stale and ``initialize`` runs again.
    """
    if marker.exists() and creates.exists():
        return
    with file_lock(marker.with_name(marker.name + ".lock")):
        if marker.exists() and creates.exists():  # another process finished while we waited
            return
        initialize()
        marker.touch()
