"""DVC versioning of stage outputs: every committed output is ``dvc add``-ed and pushed to the lab's remote.

The store folder is a DVC repository without git (``dvc init --no-scm``): each output gets a pointer file
``<stage>/<fingerprint>.dvc`` beside it. The pointer's content (md5 of the directory, size, file count) goes to
Dagster metadata and MLflow, so ``dvc pull`` on any machine with the remote brings back exactly those bytes.

With an object store (``storage.store_url``) the DVC repository lies in the lab home's cache of it: each pointer
file is also uploaded beside its output in the object store, and DVC's local cache is emptied after each push (the
remote holds the objects), so the lab home keeps no unbounded copy. Endpoint and credentials come from the
environment (botocore reads them), so the repository's ``.dvc/config`` names only the remote's URL.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from orchestration.locks import file_lock
from orchestration.object_store import ObjectStore

REMOTE_NAME = "lab"
# DVC's own repository lock gives up after about 3 s, and `dvc push` of a checkpoint takes longer; runs that share
# a lab home share its store, so every dvc command here waits for this lock first. It lies beside `.dvc`, not in
# it, because `dvc init` refuses a `.dvc` folder that already exists.
COMMAND_LOCK = ".dvc-commands.lock"


class DvcError(RuntimeError):
    pass


class DvcStore:
    def __init__(self, root: Path, remote_url: str, remote_options: dict[str, str], mirror: ObjectStore | None = None):
        self.root = root
        self.remote_url = remote_url
        self.remote_options = remote_options
        self.mirror = mirror  # the object store the outputs live in, if any

    def dvc(self, *args: str) -> str:
        """Run one dvc command in the store; commands of all processes on one store run one at a time."""
        with file_lock(self.root / COMMAND_LOCK):
            return self._run(*args)

    def _run(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=self.root, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise DvcError(f"dvc {' '.join(args)} failed in {self.root}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def ensure_repo(self) -> None:
        """Create the DVC repository and point its remote at the configured URL (idempotent)."""
        with file_lock(self.root / COMMAND_LOCK):  # one lock over check and init: one process creates the repo
            if self._remote_configured():
                return  # each dvc command starts an interpreter: skip the ones that would change nothing
            if not (self.root / ".dvc").is_dir():
                self._run("init", "--no-scm", "--quiet")
                self._run("config", "core.analytics", "false")
            self._run("remote", "add", "--default", "--force", REMOTE_NAME, self.remote_url)
            for key, value in self.remote_options.items():
                self._run("remote", "modify", REMOTE_NAME, key, value)

    def _remote_configured(self) -> bool:
        """Whether the repository exists with exactly this remote, as default, in its config file."""
        config = configparser.ConfigParser()
        try:
            config.read(self.root / ".dvc" / "config")
        except configparser.Error:
            return False
        remote = f"'remote \"{REMOTE_NAME}\"'"  # DVC's section name, quotes included
        return (config.get("core", "remote", fallback=None) == REMOTE_NAME and config.has_section(remote)
                and dict(config[remote]) == {"url": self.remote_url, **self.remote_options})

    def add_and_push(self, output: Path) -> dict:
        """Version ``output`` (a folder under the store) and push it; returns the pointer as a dict."""
        relative = output.relative_to(self.root).as_posix()
        self.ensure_repo()
        pointer_file = f"{relative}.dvc"
        with file_lock(self.root / COMMAND_LOCK):  # one critical section: no other add lands between push and drop
            self._run("add", "--quiet", relative)
            self._run("push", "--quiet", pointer_file)
            if self.mirror is not None:
                shutil.rmtree(self.root / ".dvc" / "cache", ignore_errors=True)
        if self.mirror is not None:
            self.mirror.put_file(self.root / pointer_file, pointer_file)
        pointer = self.pointer(output)
        assert pointer is not None, f"dvc add wrote no {pointer_file}"
        return pointer

    def pointer(self, output: Path) -> dict | None:
        """The recorded DVC pointer of an output folder, if it was versioned."""
        pointer_file = f"{output.relative_to(self.root).as_posix()}.dvc"
        if (self.root / pointer_file).is_file():
            text = (self.root / pointer_file).read_text()
        elif self.mirror is not None and (remote := self.mirror.read_text(pointer_file)) is not None:
            text = remote  # versioned on another host
        else:
            return None
        out = yaml.safe_load(text)["outs"][0]
        return {"pointer_file": pointer_file, "md5": out["md5"], "size": out["size"], "nfiles": out["nfiles"],
                "remote": REMOTE_NAME}

    def pull(self, pointer_file: str) -> None:
        self.ensure_repo()
        self.dvc("pull", "--quiet", pointer_file)
