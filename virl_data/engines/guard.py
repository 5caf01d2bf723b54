"""What keeps an interrupted run from leaving things behind: output folders written under a temp name that says who
wrote them, swapped in whole when complete, stale ones removed by the next run; and a watchdog that stops a local
Ray instance whose driver died without stopping it (``kill -9``). No ray import: plain files and ``/proc``.

    OUT/corpus/.curated.<host>-<pid>-<hex>.tmp   written, then swapped in as OUT/corpus/curated

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tmp = temp_folder(d / "curated"); tmp.mkdir()
    >>> _ = (tmp / "part.parquet").write_text("x")
    >>> swap_in(tmp, d / "curated").name, [p.name for p in d.iterdir()]
    ('curated', ['curated'])
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

# --- output folders: temp beside, swapped in, stale ones cleaned -----------------------------------------------------
_TMP = re.compile(r"^\.(?P<name>[\w-]+)\.(?:(?P<host>.+)-(?P<pid>\d+)-)?[0-9a-f]{8}(?:\.old)?\.tmp$")


def temp_folder(folder: Path, suffix: str = "") -> Path:
    """``.<name>.<host>-<pid>-<hex>.tmp`` beside ``folder``: who wrote it, so a later run can tell it is stale."""
    return folder.with_name(f".{folder.name}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path) -> list[Path]:
    """Remove the temp folders under ``parent`` left by runs whose driver is gone: written on this host by a
    process no longer alive (or named without an owner, by earlier versions). Returns what was removed."""
    removed = []
    for path in parent.glob(".*.tmp") if parent.is_dir() else ():
        m = _TMP.match(path.name)
        if m is None or not path.is_dir():
            continue
        if m["pid"] is None or (m["host"] == socket.gethostname() and not _alive(int(m["pid"]))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def swap_in(tmp: Path, folder: Path) -> Path:
    """Put the complete ``tmp`` in ``folder``'s place; the previous folder is moved aside first, then removed, so
    ``folder`` is at every moment either the previous complete corpus or the new one (or briefly absent)."""
    old = temp_folder(folder, ".old") if folder.exists() else None
    if old is not None:
        folder.rename(old)
    tmp.rename(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder


# --- the watchdog of a local Ray instance -------------------------------------------------------------------------
_WATCHDOG = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)
if b"done" in sys.stdin.buffer.read():  # EOF comes when the driver exits, however it exits
    sys.exit(0)
marker, owned = ("\0RAY_RAYLET_PID=" + sys.argv[1] + "\0").encode(), dict(a.split(":") for a in sys.argv[2:])
def start(pid):
    with open(f"/proc/{pid}/stat", "rb") as f: return f.read().rsplit(b")", 1)[1].split()[19].decode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f: ours = marker in b"\0" + f.read()
        if ours or owned.get(pid) == start(pid):  # the same process, not a reused pid
            os.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass
"""


def _children() -> dict[str, tuple[str, str]]:
    """This process's descendants: pid -> (start time in ticks, command name), from /proc."""
    parent: dict[str, str] = {}
    info: dict[str, tuple[str, str]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        name, rest = stat.split(b"(", 1)[1].rsplit(b")", 1)
        fields = rest.split()
        parent[pid], info[pid] = fields[1].decode(), (fields[19].decode(), name.decode())
    mine, frontier = {}, {str(os.getpid())}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in mine}
        mine |= {p: info[p] for p in frontier}
    return mine


def start_watchdog() -> subprocess.Popen[bytes] | None:
    """A process that kills the local Ray instance's processes (those this driver started, and every process of
    its raylet: agents, workers) when the driver dies without saying ``done`` on its stdin. Linux only."""
    if not Path("/proc/self/stat").exists():
        return None
    owned = _children()
    raylet = next((p for p, (_, name) in owned.items() if name == "raylet"), None)
    if raylet is None:
        return None
    args = [sys.executable, "-c", _WATCHDOG, raylet, *(f"{p}:{s}" for p, (s, _) in owned.items())]
    return subprocess.Popen(args, stdin=subprocess.PIPE, start_new_session=True)



__all__ = ["clean_stale", "start_watchdog", "swap_in", "temp_folder"]
