"""A real Dagster webserver on loopback for tests and screenshots: ``with running_webserver(lab_home) as web: ...``.

It serves ``orchestration.definitions`` from this checkout, over the Dagster instance in ``<lab home>/dagster``
(prepared as ``make ui`` does), and records its URL in ``<lab home>/dagster/webserver.json`` so that
``orchestration.webserver.reload_running_webserver`` finds it. The webserver (and the daemon, when asked for)
run in their own process groups, which are terminated, then killed, at exit: the code server the webserver
spawns goes with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestration.dagster_home import prepare_dagster_home
from orchestration.webserver import graphql, location_names, reload_location, webserver_file

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Importing the definitions pulls in torch, Hydra and Dagster: slow on a busy 2-core machine.
START_TIMEOUT_S = 300.0

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message stack } } }
    }
    ... on PythonError { message }
  }
}
"""

ASSET_NODES_QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"

MATERIALIZATIONS_QUERY = """
query Materializations($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations { runId timestamp } }
  }
}
"""


@dataclass
class Webserver:
    url: str
    log: Path
    process: subprocess.Popen | None = None

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict:
        """The ``data`` of a GraphQL query or mutation; GraphQL errors raise ``GraphQLError``."""
        return graphql(self.url, query, variables)

    def reload(self) -> None:
        """Reload every code location (the definitions are imported again), and wait until all are loaded."""
        for location in location_names(self.url):
            reload_location(self.url, location)
        self.wait_until_loaded(START_TIMEOUT_S)

    def wait_until_loaded(self, timeout_s: float) -> None:
        """Wait until the webserver answers and its code locations are loaded; fail with the log's tail if not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"webserver exited with code {self.process.returncode}\n{self.log_tail()}")
            entries = self._location_entries()
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                failed = [e for e in entries if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
                if failed:
                    raise RuntimeError(f"code location failed to load: {failed}\n{self.log_tail()}")
                return
            time.sleep(0.5)
        raise TimeoutError(f"webserver at {self.url} not loaded within {timeout_s:.0f} s\n{self.log_tail()}")

    def _location_entries(self) -> list[dict] | None:
        """The workspace's location entries, or None while the webserver does not answer yet."""
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=2):
                pass
            workspace = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        except OSError:
            return None
        return workspace.get("locationEntries")

    def asset_keys(self) -> list[list[str]]:
        """Every asset key the webserver lists, sorted."""
        return sorted(node["assetKey"]["path"] for node in self.graphql(ASSET_NODES_QUERY)["assetNodes"])

    def asset_dependencies(self) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
        """Each asset's upstream asset keys, sorted."""
        nodes = self.graphql(ASSET_NODES_QUERY)["assetNodes"]
        return {tuple(node["assetKey"]["path"]): sorted(tuple(dep["path"]) for dep in node["dependencyKeys"])
                for node in nodes}

    def materializations(self, key: list[str]) -> list[dict]:
        """The asset's materializations, newest first: ``{"runId", "timestamp"}`` each; none if never materialized."""
        asset = self.graphql(MATERIALIZATIONS_QUERY, {"key": {"path": key}})["assetOrError"]
        return asset["assetMaterializations"] if asset["__typename"] == "Asset" else []

    def materialization_count(self, key: list[str]) -> int:
        return len(self.materializations(key))

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "--- webserver log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment(lab_home: Path, dagster_home: Path) -> dict[str, str]:
    """This process's environment, with the lab home, its instance, and this checkout first on the path."""
    env = dict(os.environ, LAB_HOME=str(lab_home), DAGSTER_HOME=str(dagster_home))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


@contextmanager
def process_group(command: list[str], env: dict[str, str], log: IO[bytes]) -> Iterator[subprocess.Popen]:
    """A process in a new session; at exit its whole group gets SIGTERM, then SIGKILL after 20 s."""
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the group; SIGKILL to whatever is left of it once the leader exits, or after 20 s."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    # Children that outlived the leader (the code server) still carry its group id.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class Daemon:
    """A ``dagster-daemon`` (schedules, sensors, the run queue) for a lab home; ``crash`` kills it as a crash would."""

    env: dict[str, str]
    log: Path
    processes: list[subprocess.Popen]

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.processes.append(subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-m", "orchestration.definitions"], env=self.env, cwd=REPO_ROOT,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def crash(self) -> None:
        """SIGKILL to the daemon alone: the runs it launched (and its code server) live on, as after a real crash."""
        self.processes[-1].kill()
        self.processes[-1].wait()


@contextmanager
def running_daemon(lab_home: Path) -> Iterator[Daemon]:
    """A started daemon; every daemon started through it, and what they spawned, is stopped at exit."""
    lab_home = lab_home.resolve()
    dagster_home = prepare_dagster_home(lab_home)
    daemon = Daemon(server_environment(lab_home, dagster_home), dagster_home / "daemon.log", [])
    daemon.start()
    try:
        yield daemon
    finally:
        for process in daemon.processes:
            stop_group(process)


@contextmanager
def running_webserver(lab_home: Path, *, daemon: bool = False) -> Iterator[Webserver]:
    """A Dagster webserver (and with ``daemon=True`` a ``dagster-daemon``) for this lab home, loaded and answering."""
    lab_home = lab_home.resolve()
    dagster_home = prepare_dagster_home(lab_home)
    env = server_environment(lab_home, dagster_home)
    port = free_port()
    web = Webserver(url=f"http://127.0.0.1:{port}", log=dagster_home / "webserver.log")
    with ExitStack() as stack:
        log = stack.enter_context(web.log.open("ab"))
        web.process = stack.enter_context(process_group(
            [str(BIN / "dagster-webserver"), "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)],
            env, log))
        if daemon:
            stack.enter_context(running_daemon(lab_home))
        web.wait_until_loaded(START_TIMEOUT_S)
        record = webserver_file(lab_home)
        record.write_text(json.dumps({"url": web.url}) + "\n")
        stack.callback(record.unlink, missing_ok=True)
        yield web
