"""A look taken every few seconds from a thread while a block runs: new checkpoints reported, or mirrored."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def polling(look: Callable[[], None], seconds: float, name: str) -> Iterator[None]:
    """Call ``look`` every ``seconds`` until the block ends; the thread has stopped when the block is left.

    The last look after the block is the caller's: whether it runs after a failed block differs by caller.
    """
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(seconds):
            look()

    watcher = threading.Thread(target=watch, name=name, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
