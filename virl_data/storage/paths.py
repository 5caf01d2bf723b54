"""One rule for every command that writes: an output is never one of its inputs, nor another of its outputs.

``refuse_clashes`` takes a command's inputs and outputs by option name and raises ``PathClashError`` naming the
clash, before anything is read or written. Paths are compared resolved (``~`` expanded, symlinks followed, and as
the same file when both exist: hard links too). Three kinds of path:

- ``inputs``: files or folders the command reads (a corpus folder reads the files directly inside it);
- ``outputs``: files written at exactly that path (atomically: a temporary file renamed into place);
- ``replaced``: folders replaced whole (``virl-data export``): nothing the command reads may lie inside them.

A clash is: an output equal to an input; an output that is an existing file directly inside an input folder (a
corpus folder would have read it); two outputs at one path; an input or another output inside a replaced folder.
An output folder that merely *contains* an input (``run --out`` beside its YAML) is normal and allowed.

Example:
    >>> refuse_clashes(inputs={"--refs": "x.jsonl"}, outputs={"--out": "./x.jsonl"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    virl_data.core.errors.PathClashError: --out ./x.jsonl is also the input --refs (x.jsonl): writing it would destroy ...
    >>> refuse_clashes(inputs={"SRC": "c.parquet"}, outputs={"--out": "d.parquet", "--removed": None})
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from virl_data.core.errors import PathClashError

PathLike = str | os.PathLike[str]


def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def same_path(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file or folder (resolved; hard links count when both exist)."""
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): different paths
        return False


def _inside(path: PathLike, folder: PathLike) -> bool:
    """``path`` lies strictly inside ``folder`` (resolved)."""
    p, f = _resolved(path), _resolved(folder)
    return p != f and f in p.parents


def _given(paths: Mapping[str, PathLike | None] | None) -> list[tuple[str, PathLike]]:
    return [(name, p) for name, p in (paths or {}).items() if p is not None]


def _named(name: str, path: PathLike) -> str:
    return f"{name} ({path})"


def refuse_clashes(
    *,
    inputs: Mapping[str, PathLike | None] | None = None,
    outputs: Mapping[str, PathLike | None] | None = None,
    replaced: Mapping[str, PathLike | None] | None = None,
) -> None:
    """Raise ``PathClashError`` when an output would overwrite an input or another output (see the module
    docstring); ``None`` values (options not given) are ignored."""
    ins, outs, folders = _given(inputs), _given(outputs), _given(replaced)
    for out_name, out in outs + folders:
        for in_name, src in ins:
            if same_path(out, src):
                raise PathClashError(f"{out_name} {out} is also the input {_named(in_name, src)}: writing it would "
                                     f"destroy the input; choose another {out_name}")
            if (out_name, out) in outs and Path(src).is_dir() and Path(out).is_file() and \
                    _resolved(out).parent == _resolved(src):
                raise PathClashError(f"{out_name} {out} is a file of the input folder {_named(in_name, src)}: "
                                     f"writing it would change the input; choose another {out_name}")
    for i, (a_name, a) in enumerate(outs + folders):
        for b_name, b in (outs + folders)[i + 1:]:
            if same_path(a, b):
                raise PathClashError(f"{a_name} and {b_name} are the same path ({a}): one would overwrite the "
                                     "other; give them different paths")
    for f_name, folder in folders:
        for name, path in ins + [o for o in outs + folders if o != (f_name, folder)]:
            if _inside(path, folder):
                raise PathClashError(f"{_named(name, path)} lies inside {f_name} {folder}, which is replaced whole: "
                                     f"choose another {f_name}")


def paths_of(values: Iterable[object]) -> list[Path]:
    """The values that are paths (``str`` or ``Path``) naming something that exists: a miner's path options."""
    return [Path(v) for v in values if isinstance(v, (str, os.PathLike)) and Path(v).exists()]


__all__ = ["PathClashError", "paths_of", "refuse_clashes", "same_path"]
