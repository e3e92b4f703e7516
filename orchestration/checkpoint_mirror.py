"""Training's checkpoints copied to the object store as they land, so that a run killed on one host resumes on any.

Where training stages, and why: DCP writes each checkpoint into the local partial folder of the output
(``<lab home>/cache/store/checkpoint/.partial-<fp>/checkpoint/step-N``), not straight to S3, although torch has a
writer for fsspec. The training code reads the folder back as local files after each save and at the end
(``training.outputs`` takes DCP's save record out of each ``.metadata``, the ledger and the evaluation list the
steps), and writing to S3 from there would change the training stage's code and so the identity of every
checkpoint already trained. So the local disk needs room for one run's checkpoints; the output's other stages are
read from the bounded cache.

While training runs, a watcher uploads to ``<url>/checkpoint/.partial-<fp>/`` each complete step folder (files
first, ``.metadata`` last: the marker DCP itself writes last and torchtitan's resume trusts) and the rest of the
partial (logs, summaries, report). A build that finds no local partial (another host, a wiped cache) restores from
there the complete steps only, and the rest, and training resumes from the last of them; a step whose upload was
cut short has no ``.metadata`` there and is left out.
The commit uploads the finished output as any other and then deletes the mirrored partial.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestration.object_store import ObjectStore, ObjectStoreError
from orchestration.polling import polling

CHECKPOINTS = "checkpoint"  # the step folders' parent in a training output
DCP_MARKER = ".metadata"  # written last by DCP: a step folder without it is a save cut short
POLL_S = 5.0


def partial_name(fp: str) -> str:
    return f".partial-{fp}"  # the same name as the local partial folder (orchestration.store)


def upload_complete_steps(remote: ObjectStore, partial: Path, stage: str, fp: str, uploaded: set[str]) -> None:
    """Upload the complete step folders not uploaded yet, then everything else: the training's logs, summaries and
    report (small, uploaded again each time)."""
    for marker in sorted(partial.glob(f"{CHECKPOINTS}/step-*/{DCP_MARKER}")):
        step = marker.parent.relative_to(partial).as_posix()
        if step in uploaded:
            continue
        files = sorted(p for p in marker.parent.rglob("*") if p.is_file() and p != marker)
        for path in [*files, marker]:
            remote.put_file(path, stage, partial_name(fp), path.relative_to(partial).as_posix())
        uploaded.add(step)
    for path in sorted(p for p in partial.rglob("*") if p.is_file() and p.relative_to(partial).parts[0] != CHECKPOINTS):
        remote.put_file(path, stage, partial_name(fp), path.relative_to(partial).as_posix())


def restore_complete_steps(remote: ObjectStore, partial: Path, stage: str, fp: str) -> None:
    """The mirrored partial into ``partial`` (which must not exist): the complete steps only, and the rest."""
    names = remote.names(stage, partial_name(fp))
    complete = {name.rsplit("/", 1)[0] for name in names if name.endswith(f"/{DCP_MARKER}")}
    wanted = [name for name in names
              if not name.startswith(f"{CHECKPOINTS}/") or "/".join(name.split("/")[:2]) in complete]
    if not wanted:
        return
    staging = partial.with_name(f"{partial.name}.restoring")
    shutil.rmtree(staging, ignore_errors=True)
    remote.download(sorted(wanted, key=lambda name: name.endswith(DCP_MARKER)), staging, stage, partial_name(fp))
    staging.rename(partial)


@contextmanager
def mirror_checkpoints(remote: ObjectStore | None, partial: Path, stage: str, fp: str) -> Iterator[None]:
    """While the block trains into ``partial``, upload each complete checkpoint (no-op without an object store).

    An upload that fails (the endpoint away) is retried at the next look; the last look, after training (also after
    a failed one: what completed is what a retry resumes from), raises.
    """
    if remote is None:
        yield
        return
    uploaded: set[str] = set()

    def upload_quietly() -> None:
        try:
            upload_complete_steps(remote, partial, stage, fp, uploaded)
        except ObjectStoreError:
            pass  # the endpoint may come back before training ends; the final upload says if not

    try:
        with polling(upload_quietly, POLL_S, "checkpoint-mirror"):
            yield
    finally:
        upload_complete_steps(remote, partial, stage, fp, uploaded)
