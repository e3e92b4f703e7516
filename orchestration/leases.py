"""Leases: one builder per store output among all the runs that share a lab home.

A lease is a small JSON file beside the output, ``<store>/<stage>/.lease-<fp>``, naming its holder (host, pid, a
label such as the Dagster run id) and a heartbeat that a daemon thread of the holder refreshes every few seconds.
A run takes the lease before it looks for the output and builds it; another run that needs the same output waits
until the lease is released, then finds the committed output and reuses it.

A dead holder loses its lease. On this host the process table decides: the lease expires as soon as the holder's
process is gone (or is a zombie, or its pid now belongs to a process that started later). On another host only the
heartbeat can tell, so the lease expires when the heartbeat is older than the TTL (clocks are assumed to agree to
well within the TTL). A live holder on this host keeps its lease even when its heartbeat is late (a long call that
holds the GIL, a suspended process): taking it over would put two builders into one partial folder.

Check-and-take happens under a short flock on ``<store>/<stage>/.leases.lock``, and the lease file is replaced by
an atomic rename, so of several waiters exactly one takes over and nobody reads half a lease file.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from orchestration.locks import file_lock

HOST = socket.gethostname()
PROC = Path("/proc")


@dataclass(frozen=True)
class LeaseTiming:
    ttl: float = 120.0  # seconds: a holder on another host whose heartbeat is older is dead
    heartbeat: float = 5.0  # seconds between the holder's heartbeats
    poll: float = 1.0  # seconds between a waiter's looks at the lease
    report_every: float = 60.0  # seconds between a waiter's "waiting for ..." messages


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str  # when the process started (see process_start): tells a reused pid apart
    label: str  # who holds it, for people: e.g. "dagster run 1f2e..."
    token: str  # unique per lease taken: "still ours?" compares tokens
    heartbeat: float  # time.time() of the last heartbeat

    def describe(self) -> str:
        return f"{self.label} (pid {self.pid} on {self.host})"


class LeaseLost(RuntimeError):
    """Another process took the lease over while this one held it (it looked dead: see the module docstring)."""


def process_start(pid: int) -> str | None:
    """When live process ``pid`` started (clock ticks since boot, from /proc); None if it is gone or a zombie."""
    if not PROC.is_dir():  # not Linux: no start times, so any process with that pid counts as the holder
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "unknown"
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (command)": field 3 (state) onwards
    state, start_ticks = fields[0], fields[19]  # fields 3 and 22 of proc(5)
    return None if state in ("Z", "X") else start_ticks


def is_dead(holder: Holder, ttl: float) -> bool:
    if holder.host == HOST:
        return process_start(holder.pid) != holder.started
    return time.time() - holder.heartbeat > ttl


def read_holder(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def write_holder(path: Path, holder: Holder) -> None:
    """Replace the lease file atomically: readers see the old holder or the new one, never half a file."""
    scratch = path.with_name(f"{path.name}.{holder.token}.tmp")
    scratch.write_text(json.dumps(asdict(holder)))
    os.replace(scratch, path)


def guard(path: Path) -> Path:
    return path.parent / ".leases.lock"


def acquire(path: Path, label: str, what: str, on_wait: Callable[[str], None] | None, timing: LeaseTiming) -> Holder:
    """Take the lease at ``path``, waiting while a live holder has it; ``what`` names the output in messages."""
    pid = os.getpid()
    me = Holder(HOST, pid, process_start(pid) or "unknown", label, uuid.uuid4().hex, time.time())
    path.parent.mkdir(parents=True, exist_ok=True)
    waiting_since = time.monotonic()
    last_report = -float("inf")
    while True:
        with file_lock(guard(path)):
            current = read_holder(path)
            if current is None or is_dead(current, timing.ttl):
                me = replace(me, heartbeat=time.time())
                write_holder(path, me)
                break
        if on_wait is not None and time.monotonic() - last_report >= timing.report_every:
            last_report = time.monotonic()
            minutes = (last_report - waiting_since) / 60
            on_wait(f"waiting for {current.describe()} building {what} ({minutes:.0f} min so far)")
        time.sleep(timing.poll)
    if current is not None and on_wait is not None:
        on_wait(f"took over {what} from {current.describe()}, which died while building it")
    return me


def keep_alive(path: Path, me: Holder, stop: threading.Event, every: float) -> None:
    """The heartbeat thread: refresh the lease every ``every`` seconds until stopped or no longer ours."""
    while not stop.wait(every):
        with file_lock(guard(path)):
            current = read_holder(path)
            if current is None or current.token != me.token:
                return
            write_holder(path, replace(me, heartbeat=time.time()))


def release(path: Path, me: Holder) -> bool:
    """Remove the lease if it is still ours; False if another process had taken it over."""
    with file_lock(guard(path)):
        current = read_holder(path)
        if current is None or current.token != me.token:
            return False
        path.unlink()
        return True


@contextmanager
def hold_lease(
    path: Path, label: str, what: str, on_wait: Callable[[str], None] | None = None,
    timing: LeaseTiming = LeaseTiming(),
) -> Iterator[Holder]:
    """Hold the lease at ``path`` for the ``with`` block, with a heartbeat; ``on_wait`` gets progress messages.

    Raises LeaseLost after the block when another process took the lease over meanwhile, so that the run fails
    loudly instead of passing off an output that two builders may have written.
    """
    me = acquire(path, label, what, on_wait, timing)
    stop = threading.Event()
    heartbeat = threading.Thread(target=keep_alive, args=(path, me, stop, timing.heartbeat),
                                 name=f"lease heartbeat {what}", daemon=True)
    heartbeat.start()
    try:
        yield me
    finally:
        stop.set()
        heartbeat.join()
        still_ours = release(path, me)
    if not still_ours:
        raise LeaseLost(f"the lease on {what} was taken over while {me.describe()} held it")
