"""Leases on store outputs, exercised with real processes: one build among racers, takeover after a SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from orchestration.leases import Holder, LeaseLost, LeaseTiming, read_holder, write_holder
from orchestration.store import Manifest, Store

STAGE, FP = "mixed", "0123456789abcdef"
FAST = LeaseTiming(ttl=1.0, heartbeat=0.2, poll=0.05, report_every=0.0)
SPAWN = multiprocessing.get_context("spawn")


def manifest(stats: dict) -> Manifest:
    return Manifest(stage=STAGE, fingerprint=FP, content_hash="", code_version="c", config={}, upstream={},
                    stats=stats)


def wait_for(condition, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def build_once(root: str, start, results) -> None:
    """One racer: find the output or build it (2 s, logging its pid), under the lease."""
    store = Store(Path(root))

    def slow_build(partial: Path) -> Manifest:
        with open(Path(root, "builds.log"), "a") as log:
            log.write(f"{os.getpid()}\n")
        (partial / "data.txt").write_text("built")
        time.sleep(2)
        return manifest({"builder": os.getpid()})

    start.wait()
    with store.lease(STAGE, FP, holder=f"racer {os.getpid()}", timing=FAST):
        found = store.find(STAGE, FP)
        result = found or store.commit(STAGE, FP, slow_build)
    results.put(asdict(result))


def test_racers_build_an_output_once(tmp_path: Path) -> None:
    start, results = SPAWN.Barrier(4), SPAWN.Queue()
    racers = [SPAWN.Process(target=build_once, args=(str(tmp_path), start, results)) for _ in range(4)]
    for racer in racers:
        racer.start()
    manifests = [results.get(timeout=120) for _ in racers]
    for racer in racers:
        racer.join(timeout=30)
        assert racer.exitcode == 0
    builders = Path(tmp_path, "builds.log").read_text().split()
    assert len(builders) == 1
    assert all(m == manifests[0] for m in manifests)
    assert manifests[0]["stats"]["builder"] == int(builders[0])
    assert not list(Path(tmp_path, STAGE).glob(".partial-*")) and not Path(tmp_path, STAGE, f".lease-{FP}").exists()


def resumable_build(root: str, go: str | None) -> None:
    """Build a resumable output in two parts; the first run stops for good after part one (it is killed there)."""
    store = Store(Path(root))
    messages = Path(root, f"messages-{os.getpid()}.txt")

    def build(partial: Path) -> Manifest:
        resumed = (partial / "part1.txt").exists()
        if not resumed:
            (partial / "part1.txt").write_text(f"by {os.getpid()}")
            time.sleep(3600)  # the holder is SIGKILLed here
        Path(root, "resuming").write_text(str(os.getpid()))
        wait_for(Path(go).exists, "the test's go-ahead")
        (partial / "part2.txt").write_text(f"by {os.getpid()}")
        return manifest({"resumed": resumed})

    def log(message: str) -> None:
        with messages.open("a") as handle:
            handle.write(message + "\n")

    with store.lease(STAGE, FP, holder=f"worker {os.getpid()}", on_wait=log, timing=FAST):
        store.find(STAGE, FP) or store.commit(STAGE, FP, build, keep_partial=True)


def test_waiter_takes_over_a_killed_holder_and_resumes(tmp_path: Path) -> None:
    store, go = Store(tmp_path), tmp_path / "go"
    holder = SPAWN.Process(target=resumable_build, args=(str(tmp_path), None))
    holder.start()
    partial = store.partial_path(STAGE, FP)
    wait_for((partial / "part1.txt").exists, "the holder's first part")
    waiter = SPAWN.Process(target=resumable_build, args=(str(tmp_path), str(go)))
    waiter.start()
    messages = tmp_path / f"messages-{waiter.pid}.txt"
    wait_for(lambda: messages.exists() and "waiting for" in messages.read_text(), "the waiter to wait")
    assert f"worker {holder.pid}" in messages.read_text()

    os.kill(holder.pid, signal.SIGKILL)
    wait_for((tmp_path / "resuming").exists, "the waiter to resume")
    assert (tmp_path / "resuming").read_text() == str(waiter.pid)
    assert store.find(STAGE, FP) is None and not store.path(STAGE, FP).exists()  # half-built stays unpublished
    go.touch()
    waiter.join(timeout=60)
    holder.join(timeout=10)

    assert waiter.exitcode == 0 and holder.exitcode == -signal.SIGKILL
    assert "took over" in messages.read_text()
    committed = store.find(STAGE, FP)
    assert committed is not None and committed.stats == {"resumed": True}
    output = store.path(STAGE, FP)
    assert (output / "part1.txt").read_text() == f"by {holder.pid}"
    assert (output / "part2.txt").read_text() == f"by {waiter.pid}"


def test_a_remote_holder_keeps_its_lease_while_its_heartbeat_lives(tmp_path: Path) -> None:
    """A holder on another host can only be judged by its heartbeat: fresh, wait; older than the TTL, take over."""
    store, timing = Store(tmp_path), LeaseTiming(ttl=5.0, heartbeat=0.1, poll=0.05, report_every=0.0)
    lease = tmp_path / STAGE / f".lease-{FP}"
    lease.parent.mkdir()
    remote = Holder("another-host", 1, "1", "dagster run elsewhere", "remote-token", time.time())
    write_holder(lease, remote)
    beats, stop = [], threading.Event()

    def heartbeat() -> None:  # the remote holder's heartbeat thread, for 10 beats
        for _ in range(10):
            beats.append(time.time())
            write_holder(lease, Holder(**{**asdict(remote), "heartbeat": beats[-1]}))
            if stop.wait(timing.heartbeat):
                return

    thread = threading.Thread(target=heartbeat)
    thread.start()
    messages: list[str] = []
    try:
        with store.lease(STAGE, FP, holder="local run", on_wait=messages.append, timing=timing) as me:
            took_over_at = time.time()
            assert read_holder(lease) == me
    finally:
        stop.set()
        thread.join()
    assert len(beats) == 10 and took_over_at > beats[-1] + timing.ttl
    assert "dagster run elsewhere (pid 1 on another-host)" in messages[0]
    assert messages[-1].startswith(f"took over {STAGE} {FP}")
    assert not lease.exists()


def test_a_lease_taken_over_meanwhile_is_not_released_and_fails_the_holder(tmp_path: Path) -> None:
    store = Store(tmp_path)
    lease = tmp_path / STAGE / f".lease-{FP}"
    with pytest.raises(LeaseLost), store.lease(STAGE, FP, holder="slow run", timing=FAST) as me:
        usurper = Holder(me.host, me.pid, me.started, "usurper", "other-token", time.time())
        write_holder(lease, usurper)
    assert json.loads(lease.read_text())["label"] == "usurper"
