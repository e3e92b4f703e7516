"""A throwaway single-node Slurm for the tests: munged, slurmctld and slurmd from Debian's ``slurm-wlm``, in a temp dir.

One node, this host with its real CPU count and memory, at 127.0.0.1 on a free port pair; a munge key of its own
and munged's socket in the temp dir (``AuthInfo=socket=...``), so nothing of a system Slurm or munge is used or
disturbed. ``proctrack/linuxproc`` and ``task/none``: no cgroups, which a container may not have. No accounting
(no sacct). The clients (sbatch, scontrol, ...) find it through ``SLURM_CONF``. slurmd runs jobs as their user, so
it must be root: without root, or without the binaries, the tests that need Slurm are skipped, saying so.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel")


@dataclass
class SlurmCluster:
    root: Path
    node: str

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self) -> dict[str, str]:
        """What a client (sbatch, scontrol, `lab`) needs to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def scontrol(self, *args: str) -> str:
        return subprocess.run(["scontrol", *args], env={**os.environ, **self.env()}, check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def job(self, job_id: str) -> dict[str, str]:
        """The job's record in slurmctld (kept MinJobAge=300 s after it ends), as KEY=VALUE pairs."""
        return job_record(self.scontrol("show", "job", "-o", job_id))

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (ended ones for MinJobAge=300 s), as ``job`` gives one."""
        return [job_record(line) for line in self.scontrol("show", "jobs", "-o").splitlines()]

    def log(self, daemon: str) -> str:
        path = self.root / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def job_record(line: str) -> dict[str, str]:
    """One line of ``scontrol show job -o``: KEY=VALUE pairs."""
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


def slurm_conf(root: Path, node: str, cpus: int, memory_mb: int, ctld_port: int, slurmd_port: int) -> str:
    settings = {
        "ClusterName": "labtest", "SlurmctldHost": f"{node}(127.0.0.1)", "SlurmUser": "root",
        "SlurmctldPort": ctld_port, "SlurmdPort": slurmd_port,
        "AuthType": "auth/munge", "CredType": "cred/munge", "AuthInfo": f"socket={root / 'munge.socket'}",
        "StateSaveLocation": root / "state", "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid", "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "slurmctld.log", "SlurmdLogFile": root / "slurmd.log",
        "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none", "MpiDefault": "none",
        "JobAcctGatherType": "jobacct_gather/none", "AccountingStorageType": "accounting_storage/none",
        "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_CPU",
        "SchedulerType": "sched/builtin", "ReturnToService": 2,
        # The node is what this file says, whatever slurmd detects (a container's CPUs, its memory).
        "SlurmdParameters": "config_overrides",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines += [f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
              f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP"]
    return "\n".join(lines) + "\n"


def wait_until(condition, what: str, daemon_log: Path, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            log = daemon_log.read_text(errors="replace")[-3000:] if daemon_log.exists() else "(no log)"
            raise RuntimeError(f"{what} within {limit:.0f} s; {daemon_log}:\n{log}")
        time.sleep(0.3)


def node_idle(cluster: SlurmCluster) -> bool:
    try:
        state = cluster.scontrol("show", "node", "-o", cluster.node)
    except subprocess.CalledProcessError:
        return False
    return "State=IDLE" in state


def stop(pid_file: Path) -> None:
    """SIGTERM the daemon named by its pid file, then wait for it (SIGKILL after 20 s)."""
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError):
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A fresh one-node Slurm for the test module, stopped and removed afterwards."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm")
    if os.geteuid() != 0:
        pytest.skip("slurmd runs jobs as their user, so it needs root; run as root (as CI does)")
    root = Path(tempfile.mkdtemp(prefix="lab-slurm-"))
    root.chmod(0o711)  # munged wants its socket's folder searchable by all, and writable by none but its owner
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    node = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(root, node)
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20  # for --mem-per-cpu requests
    cluster.conf.write_text(slurm_conf(root, node, os.cpu_count() or 1, memory_mb, free_port(), free_port()))
    key = root / "munge.key"
    key.write_bytes(secrets.token_bytes(128))
    key.chmod(0o400)
    env = {**os.environ, **cluster.env()}
    try:
        subprocess.run(["munged", f"--key-file={key}", f"--socket={root / 'munge.socket'}",
                        f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
                        f"--seed-file={root / 'munged.seed'}"], check=True, capture_output=True, text=True)
        # -c: a clean start, no state of an earlier cluster; -i: ignore a stale state file.
        subprocess.run(["slurmctld", "-c", "-i", "-f", str(cluster.conf)], env=env, check=True, capture_output=True)
        subprocess.run(["slurmd", "-f", str(cluster.conf), "-N", node], env=env, check=True, capture_output=True)
        wait_until(lambda: node_idle(cluster), "the Slurm node did not come up idle", root / "slurmd.log")
        yield cluster
    finally:
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            stop(root / pid_file)
        shutil.rmtree(root, ignore_errors=True)
