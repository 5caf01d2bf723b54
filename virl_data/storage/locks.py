"""One writer per output folder: a run folder, a pipeline's ``--out``, a rendered image folder or an export target is
written by one process at a time.

Two processes writing one folder interleave their logs and overwrite each other's files, and both exit 0. A writer
therefore holds an OS file lock (``filelock``: ``flock`` on Unix) for as long as it writes:

- ``folder_lock(folder)``: the lock file ``folder/.virl.lock``, for a folder written in place (a training run, a
  pipeline run, the images a miner renders);
- ``sibling_lock(path)``: the lock file ``.<name>.virl.lock`` beside ``path``, for a target replaced whole by a rename
  (an export folder), where a lock inside would be renamed away with the old folder.

Beside the lock file, ``<lock>.holder`` names the holder (pid, host, start time, command line), so that a second
writer fails at once with one line naming it::

    error: runs/a is in use by another virl process (pid 4242 on host gpu1 since 2026-12-07T13:02:27+00:00:
    virl-train train --config c.yaml); wait for it to finish or write to another folder

The OS releases the lock when its holder dies, even by ``kill -9``: the next writer then takes it at once and
overwrites the stale ``.holder`` note. The lock file itself stays (removing it on release would let two writers hold
two different inodes).

Example:
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with folder_lock(run):
    ...     try:
    ...         with folder_lock(run):
    ...             pass
    ...     except FolderBusyError as exc:
    ...         print("busy")
    busy
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from virl_data.storage.corpus import atomic_path
from virl_data.core.errors import VirlError

LOCK_NAME = ".virl.lock"
HOLDER_SUFFIX = ".holder"


class FolderBusyError(VirlError):
    """Another process holds the folder's lock; the message names it (pid, host, since, command)."""


def holder_note() -> str:
    """Who this process is: ``pid <pid> on host <host> since <ISO time>: <command line>``."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    since = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on host {socket.gethostname()} since {since}: {' '.join(argv)}"


def read_holder(lock_file: Path) -> str:
    """The holder note of ``lock_file`` ("unknown holder" when it has not been written yet)."""
    try:
        return Path(f"{lock_file}{HOLDER_SUFFIX}").read_text().strip() or "unknown holder"
    except OSError:
        return "unknown holder"


@contextlib.contextmanager
def hold(lock_file: str | os.PathLike[str], what: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``lock_file`` while the block runs (never waiting); ``FolderBusyError`` naming the holder and ``what``
    when another process (or another lock object of this one) holds it. Yields the lock file's path."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise FolderBusyError(
            f"{what} is in use by another virl process ({read_holder(lock_file)}); wait for it to finish or write to "
            "another folder"
        ) from None
    holder = Path(f"{lock_file}{HOLDER_SUFFIX}")
    try:
        with atomic_path(holder) as tmp:
            tmp.write_text(holder_note() + "\n")
        yield lock_file
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def folder_lock(folder: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """Lock a folder written in place: ``folder/.virl.lock`` (the folder is created when missing)."""
    return hold(Path(folder) / LOCK_NAME, folder)


def sibling_lock(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """Lock a target replaced whole: ``.<name>.virl.lock`` in ``path``'s parent folder."""
    path = Path(path)
    return hold(path.parent / f".{path.name}{LOCK_NAME}", path)


def is_lock_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a lock file of this module or its holder note (what a folder-emptiness check ignores)."""
    name = Path(path).name
    return name.endswith(LOCK_NAME) or name.endswith(LOCK_NAME + HOLDER_SUFFIX)


__all__ = ["LOCK_NAME", "FolderBusyError", "folder_lock", "hold", "holder_note", "is_lock_file", "read_holder",
           "sibling_lock"]
