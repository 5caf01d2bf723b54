"""Trajectory logs: one JSON line per episode, written by ``virl-train train`` / ``eval`` and read as is by
``virl-train score`` and ``virl-data queue``. The one writer and reader of the format; it lives in the data half
because both halves read it (``virl_train.trajectories.trajectory_row`` builds a line from a scored episode).

A line (``FORMAT_VERSION`` 1; boxes ``[x1, y1, x2, y2]`` in ORIGINAL-image pixels, the canonical convention: the
action parser already converted the model's own convention through ``virl_data.core.boxconv``)::

    version      1 (absent = 1: hand-written lines in the minimal form below still read)
    source       "train" | "eval"
    step         the optimizer step (1-based) whose update used the episode; null for eval
    group        index of the episode's group (= prompt) in its step, over all processes; eval: the record's index
    sample       index of the episode within its group (0 … group_size − 1); eval: 0
    id           record id
    question     the question asked
    image_size   [W, H] of the original image
    rationale    the ground-truth chain: one list of boxes per step
    gt_answer    the gold answer;  answer_type: its type (or null)
    turns        the model's raw generated text, one string per turn
    actions      one per visual action, in order: its box, or null when the action was invalid (malformed)
    action_errors  per action: null, or why it was invalid (``virl_train.actions.ERRORS`` code)
    answer       the final answer text, or null; for a box answer (``answer_type`` "box", ``gt_answer`` the gold
                 box as ``"[x1, y1, x2, y2]"``) the answered box ``[x1, y1, x2, y2]`` in the same pixels, scored
                 by IoU against the gold (``RewardConfig.answer_iou``);  format_ok: false when the rollout broke
                 the format
    reward       the breakdown under the run's reward config: total, components, labels (kind, fidelity,
                 matched_step, coverage_gain, reason, credit per action) and config (the ``RewardConfig`` as a dict)

``score`` needs only ``id``, ``image_size``, ``rationale``, ``actions``, ``answer``, ``gt_answer`` (optional:
``answer_type``, ``options``, ``format_ok``); ``reward`` is what the run logged, kept for comparison.

Writing: ``TrajectoryLog`` appends whole lines and flushes them to the OS after each step's batch, from the main
process only; the trainer gathers every process's episodes to it first (``accelerate.utils.gather_object``), so a
multi-process run writes one file. On resume from the checkpoint of step k, ``truncate_steps`` first drops the lines
of steps after k (and a torn last line), so the file never repeats a step. Evaluation writes its file at once
(``write_trajectories``, atomic).

Example:
    >>> row = {"id": "q", "image_size": [100, 100], "rationale": [[[0, 0, 10, 10]]], "actions": [[0, 0, 10, 10]],
    ...        "answer": "red", "gt_answer": "red", "version": 1}
    >>> t = parse_line(row, "t.jsonl", 1); t.actions, t.version
    ((Box(x1=0.0, y1=0.0, x2=10.0, y2=10.0),), 1)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from virl_data.core.errors import CorpusReadError
from virl_data.core.types import Box
from virl_data.storage.corpus import atomic_path

FORMAT_VERSION = 1
FILE_NAME = "trajectories.jsonl"
"""The trajectory log's name in a run folder (``run.out_dir``) and in an eval report folder."""


class TrajectoryError(CorpusReadError):
    """A trajectory file line is not valid JSON or lacks / mistypes a field; the message names file and line."""


@dataclass(frozen=True)
class Trajectory:
    """One parsed line: what ``score`` needs, where the episode came from, and the reward the run logged."""

    id: str
    image_size: tuple[float, float]
    chain: tuple[tuple[Box, ...], ...]
    actions: tuple[Box | None, ...]
    answer: str | Box | None
    gt_answer: str
    answer_type: str | None = None
    options: Any = None
    format_ok: bool = True
    version: int = FORMAT_VERSION
    source: str | None = None
    step: int | None = None
    group: int | None = None
    sample: int | None = None
    logged: dict[str, Any] | None = None


# --- writing -----------------------------------------------------------------------------------------------------
def answer_json(answer: str | Box | None) -> str | list[float] | None:
    """A line's ``answer`` field: a box answer as ``[x1, y1, x2, y2]``, text (or None) as is."""
    return list(answer.as_tuple()) if isinstance(answer, Box) else answer


def _dumps(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def truncate_steps(path: Path, last_step: int) -> int:
    """Keep only the lines of ``path`` whose ``step`` is ≤ ``last_step`` (atomic rewrite; a missing file stays
    missing); a torn last line (no newline, or not JSON) is dropped too. Returns the number of lines kept.

    Used on resume from the checkpoint of ``last_step`` for every step-keyed JSONL of a run (``log.jsonl`` and the
    trajectory log), so what a killed run wrote after its last checkpoint is not logged twice.
    """
    path = Path(path)
    if not path.exists():
        return 0
    kept = 0
    with path.open("rb") as src, atomic_path(path) as tmp, tmp.open("wb") as dst:
        for lineno, raw in enumerate(src, 1):
            if not raw.strip():
                continue
            try:
                step = orjson.loads(raw).get("step")
            except (orjson.JSONDecodeError, AttributeError):
                if raw.endswith(b"\n"):
                    raise TrajectoryError(f"{path}:{lineno}: not a JSON object; cannot resume its log") from None
                break  # torn last line of a killed run
            if not raw.endswith(b"\n"):
                break
            if isinstance(step, int) and step <= last_step:
                dst.write(raw)
                kept += 1
    return kept


class TrajectoryLog:
    """Appends a run's trajectory lines to ``path``, line-buffered; a no-op where ``enabled`` is False (every
    process but the main one). Opening truncates the file to ``resume_step`` (0 = a fresh run: empty file).

    >>> import tempfile
    >>> log = TrajectoryLog(Path(tempfile.mkdtemp()) / FILE_NAME, resume_step=0)
    >>> log.write([{"step": 1, "id": "a"}]); log.close(); log.path.read_text()
    '{"step":1,"id":"a"}\\n'
    """

    def __init__(self, path: Path, *, resume_step: int = 0, enabled: bool = True) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] | None = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step > 0:
                truncate_steps(self.path, resume_step)
            else:
                self.path.unlink(missing_ok=True)
            self._fh = self.path.open("ab")

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append ``rows``, one JSON line each, and flush them to the OS (a killed run loses at most a torn line)."""
        if self._fh is None:
            return
        for row in rows:
            self._fh.write(_dumps(row))
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_trajectories(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write ``rows`` as a whole trajectory file, atomically (evaluation)."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        for row in rows:
            fh.write(_dumps(row))
    return Path(path)


# --- reading -----------------------------------------------------------------------------------------------------
def _box(value: Any, what: str) -> Box:
    ok = isinstance(value, list) and len(value) == 4
    if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"{what} must be [x1, y1, x2, y2] numbers, got {value!r}"[:200])
    return Box(*value)


def _chain(value: Any) -> tuple[tuple[Box, ...], ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("'rationale' must be a non-empty list of steps")
    steps = []
    for j, step in enumerate(value):
        if not isinstance(step, list) or not step:
            raise ValueError(f"rationale step {j} must be a non-empty list of boxes")
        boxes = tuple(_box(b, f"rationale step {j} box {i}") for i, b in enumerate(step))
        if any(b.w <= 0 or b.h <= 0 for b in boxes):
            raise ValueError(f"rationale step {j} has an empty box (need x1 < x2 and y1 < y2)")
        steps.append(boxes)
    return tuple(steps)


def _optional_int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"'{key}' must be an integer or null, got {value!r}"[:200])
    return value


def _check(obj: Any) -> None:
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    version = obj.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"trajectory format version {version!r}; this virl reads version {FORMAT_VERSION}")
    missing = [k for k in ("id", "image_size", "rationale", "actions", "answer", "gt_answer") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    size = obj["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int | float) and v > 0 for v in size)):
        raise ValueError(f"'image_size' must be [W, H] with positive numbers, got {size!r}"[:200])
    if not isinstance(obj["actions"], list):
        raise ValueError("'actions' must be a list of boxes or nulls")
    answer = obj["answer"]
    if answer is not None and not isinstance(answer, str | list):
        raise ValueError("'answer' must be a string, a box [x1, y1, x2, y2] or null")
    if not isinstance(obj["gt_answer"], str):
        raise ValueError("'gt_answer' must be a string")
    if not isinstance(obj.get("answer_type"), str | None):
        raise ValueError("'answer_type' must be a string or null")
    options = obj.get("options")
    if options is not None and not (
        (isinstance(options, list) and all(isinstance(o, str) for o in options))
        or (isinstance(options, dict) and all(isinstance(o, str) for o in options.values()))
    ):
        raise ValueError("'options' must be a list of strings or an object {letter: text}")
    if not isinstance(obj.get("reward"), dict | None):
        raise ValueError("'reward' must be an object or null")


def _fields(obj: Any) -> Trajectory:
    _check(obj)
    size = obj["image_size"]
    return Trajectory(
        id=str(obj["id"]),
        image_size=(float(size[0]), float(size[1])),
        chain=_chain(obj["rationale"]),
        actions=tuple(None if a is None else _box(a, f"action {k}") for k, a in enumerate(obj["actions"])),
        answer=_box(obj["answer"], "'answer' (a box answer)") if isinstance(obj["answer"], list) else obj["answer"],
        gt_answer=obj["gt_answer"],
        answer_type=obj.get("answer_type"),
        options=obj.get("options"),
        format_ok=bool(obj.get("format_ok", True)),
        source=obj.get("source") if isinstance(obj.get("source"), str) else None,
        step=_optional_int(obj, "step"),
        group=_optional_int(obj, "group"),
        sample=_optional_int(obj, "sample"),
        logged=obj.get("reward"),
    )


def parse_line(obj: Any, path: str | os.PathLike[str], lineno: int) -> Trajectory:
    """Validate one decoded line; ``TrajectoryError("<path>:<lineno>: <what is wrong>")`` otherwise."""
    try:
        return _fields(obj)
    except ValueError as exc:
        raise TrajectoryError(f"{path}:{lineno}: {exc}") from None


def read_trajectories(path: Path) -> Iterator[Trajectory]:
    """Parse a JSONL file lazily (blank lines skipped); the first bad line raises ``TrajectoryError``."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise TrajectoryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise TrajectoryError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            yield parse_line(obj, path, lineno)


__all__ = [
    "FILE_NAME",
    "FORMAT_VERSION",
    "Trajectory",
    "TrajectoryError",
    "TrajectoryLog",
    "parse_line",
    "answer_json",
    "read_trajectories",
    "truncate_steps",
    "write_trajectories",
]
