"""Stage outputs in an object store (``s3://bucket/prefix``, or any fsspec URL), and a bounded local cache of them.

Object stores have no rename, so the store's atomic commit becomes an ordered upload: every content file of an
output goes to ``<url>/<stage>/<fingerprint>/`` first, ``manifest.json`` last. The manifest is the commit marker:
``find`` and ``list`` trust only outputs that have one, so an upload cut short (a killed run, the endpoint gone)
is invisible, and the next commit of the same fingerprint deletes what it left and uploads afresh.

Endpoint and credentials come only from the environment or the standard AWS chain (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role): botocore reads them, nothing here or in the
config names them, so no log, manifest, MLflow param or DVC config can hold one.

The stages' libraries (datatrove, tokenizers, numpy memmaps, torchtitan) read and write local files, so outputs
are built in a local partial folder and read back from a local copy: ``<lab home>/cache/store/<stage>/<fp>``,
downloaded once (files first, manifest last, into a temporary folder renamed into place). The cache is bounded
(``storage.cache_gb``): after each download or commit, the least recently used outputs are deleted until it fits,
except those this process used or any process used in the last hour (a running stage may still read them).
"""

from __future__ import annotations

import posixpath
import shutil
import time
from pathlib import Path

from orchestration.locks import file_lock

MANIFEST = "manifest.json"  # an output's commit marker (orchestration.store imports it from here)
# Outputs used this recently are never evicted: another process of the host (a run's training, an evaluation) may
# be reading them. The cache may exceed its bound meanwhile.
KEEP_RECENT_S = 3600.0


class ObjectStoreError(ValueError):
    """The object store could not be read or written; the message names the URL and what to check.

    A ValueError, so that ``lab`` prints it as one line rather than a traceback (as orchestration.services does).
    """


def transport_errors() -> tuple[type[Exception], ...]:
    """What a failed request raises: OSError from fsspec, botocore's own errors (a refused connection) from s3fs."""
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:  # another fsspec backend
        return (OSError,)
    return (OSError, BotoCoreError)


def _fs_error(url: str, action: str, error: Exception) -> ObjectStoreError:
    return ObjectStoreError(
        f"{action} {url} failed ({type(error).__name__}: {error}); check that the endpoint (AWS_ENDPOINT_URL) is "
        "up and the credentials in the environment can reach the bucket, then run again: nothing partial is visible "
        "as committed"
    )


class ObjectStore:
    """The outputs under one fsspec URL, and their local cache (a folder, bounded to ``cache_bytes``)."""

    def __init__(self, url: str, cache: Path, cache_bytes: int):
        from fsspec.core import url_to_fs  # s3fs: imported only when a lab home uses an object store

        self.url = url.rstrip("/")
        # Its own client, so that it reads the endpoint and credentials of the environment it starts in.
        self.fs, self.base = url_to_fs(self.url, skip_instance_cache=True)
        self.errors = transport_errors()
        self.cache = cache
        self.cache_bytes = cache_bytes
        self._used: set[Path] = set()  # cached outputs this process read or wrote: never evicted under it

    def key(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts)

    def read_text(self, *parts: str) -> str | None:
        """A small object's text (a manifest, a DVC pointer); None when it is not there."""
        try:
            return self.fs.cat_file(self.key(*parts)).decode()
        except FileNotFoundError:
            return None
        except self.errors as error:
            raise _fs_error(f"{self.url}/{'/'.join(parts)}", "reading", error) from error

    def manifests(self, stage: str) -> list[str]:
        """The manifest texts of every committed output of the stage."""
        try:
            self.fs.invalidate_cache(self.key(stage))
            found = sorted(self.fs.glob(self.key(stage, "*", MANIFEST)))
            return [self.fs.cat_file(path).decode() for path in found]
        except self.errors as error:
            raise _fs_error(f"{self.url}/{stage}", "listing", error) from error

    def put_file(self, local: Path, *parts: str) -> None:
        try:
            self.fs.put_file(str(local), self.key(*parts))
        except self.errors as error:
            raise _fs_error(f"{self.url}/{'/'.join(parts)}", "uploading to", error) from error

    def upload(self, folder: Path, stage: str, fp: str) -> None:
        """Commit ``folder`` as ``<stage>/<fp>``: remove what an earlier, cut-short upload left, upload every
        content file, then the manifest (the commit marker)."""
        self.remove(stage, fp)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST)
        for path in [*files, folder / MANIFEST]:
            self.put_file(path, stage, fp, path.relative_to(folder).as_posix())

    def local(self, stage: str, fp: str) -> Path:
        """The output's folder in the cache, downloaded first if it is committed and not cached yet."""
        folder = self.cache / stage / fp
        if not (folder / MANIFEST).is_file():
            with file_lock(self.cache / stage / f".fetch-{fp}.lock"):  # one download per output and host
                if not (folder / MANIFEST).is_file() and self.read_text(stage, fp, MANIFEST) is not None:
                    self._download(stage, fp, folder)
                    self._used.add(folder)
                    self.evict()
        if (folder / MANIFEST).is_file():
            (folder / MANIFEST).touch()  # its use time, for the least-recently-used eviction
            self._used.add(folder)
        return folder

    def names(self, *parts: str) -> list[str]:
        """The relative names of every object under ``<url>/<parts>/``."""
        prefix = self.key(*parts)
        try:
            self.fs.invalidate_cache(prefix)
            return sorted(path[len(prefix) + 1:] for path in self.fs.find(prefix))
        except self.errors as error:
            raise _fs_error(f"{self.url}/{'/'.join(parts)}", "listing", error) from error

    def download(self, names: list[str], folder: Path, *parts: str) -> None:
        """Objects ``<parts>/<name>`` into ``folder``, in the order given (a commit marker last)."""
        try:
            for name in names:
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self.key(*parts, name), str(folder / name))
        except self.errors as error:
            raise _fs_error(f"{self.url}/{'/'.join(parts)}", "downloading", error) from error

    def remove(self, *parts: str) -> None:
        """Every object under ``<parts>/``, if any."""
        prefix = self.key(*parts)
        try:
            self.fs.invalidate_cache(prefix)
            if self.fs.exists(prefix):
                self.fs.rm(prefix, recursive=True)
        except self.errors as error:
            raise _fs_error(f"{self.url}/{'/'.join(parts)}", "deleting", error) from error

    def _download(self, stage: str, fp: str, folder: Path) -> None:
        staging = folder.with_name(f".fetching-{fp}")
        shutil.rmtree(staging, ignore_errors=True)
        self.download(sorted(self.names(stage, fp), key=lambda name: name == MANIFEST), staging, stage, fp)
        staging.rename(folder)

    def committed_locally(self, folder: Path) -> None:
        """A just committed output, moved into the cache by the store: keep it for this process, then bound."""
        self._used.add(folder)
        self.evict()

    def evict(self) -> None:
        """Delete the least recently used cached outputs until the cache fits its bound."""
        outputs = [m.parent for m in self.cache.glob(f"*/*/{MANIFEST}") if not m.parent.name.startswith(".")]
        sizes = {folder: sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) for folder in outputs}
        total = sum(sizes.values())
        recent = time.time() - KEEP_RECENT_S
        for folder in sorted(outputs, key=lambda f: (f / MANIFEST).stat().st_mtime):
            if total <= self.cache_bytes:
                break
            if folder in self._used or (folder / MANIFEST).stat().st_mtime > recent:
                continue
            # Renamed away first (atomic): the output is either whole in the cache or not there at all.
            doomed = folder.with_name(f".evicting-{folder.name}")
            shutil.rmtree(doomed, ignore_errors=True)
            try:
                folder.rename(doomed)
            except FileNotFoundError:  # another process on this host evicted it first
                continue
            shutil.rmtree(doomed)
            total -= sizes[folder]
