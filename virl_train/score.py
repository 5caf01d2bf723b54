"""Score logged trajectories offline with the training reward (``virl-train score``): same code path, ``score_episode``.

Input: JSON lines, boxes in ORIGINAL-image pixels::

    {"id": "q1", "image_size": [W, H], "rationale": [[[x1, y1, x2, y2], ...], ...],
     "actions": [[x1, y1, x2, y2] or null, ...], "answer": "red" or null, "gt_answer": "red",
     "answer_type": optional, "options": optional list or {letter: text}, "format_ok": optional bool}

``null`` actions are malformed model actions (erroneous, format penalty). For a box answer (``"answer_type":
"box"``, ``gt_answer`` the gold box as ``"[x1, y1, x2, y2]"``) ``answer`` is the answered box ``[x1, y1, x2, y2]``
in the same pixels (or null), scored by IoU against the gold (``RewardConfig.answer_iou``). Output: one JSON object per input line,
in order: ``id``, ``labels`` (kind, fidelity, matched_step, coverage_gain, reason, credit per action),
``components``, ``total``, ``config`` (the ``RewardConfig`` as a dict). A line that is not such an object raises
``TrajectoryError`` naming the file and line.

Example:
    >>> line = {"id": "q", "image_size": [100, 100], "rationale": [[[0, 0, 10, 10]]], "actions": [[0, 0, 10, 10]],
    ...         "answer": "red", "gt_answer": "red"}
    >>> score_line(parse_line(line, "t.jsonl", 1), RewardConfig.preset("full"))["total"]
    1.5
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from virl_data.errors import CorpusReadError
from virl_data.types import Box
from virl_train.rewards import RewardConfig, score_episode


class TrajectoryError(CorpusReadError):
    """A trajectory file line is not valid JSON or lacks / mistypes a field; the message names file and line."""


@dataclass(frozen=True)
class Trajectory:
    """One parsed input line."""

    id: str
    image_size: tuple[float, float]
    chain: tuple[tuple[Box, ...], ...]
    actions: tuple[Box | None, ...]
    answer: str | Box | None
    gt_answer: str
    answer_type: str | None = None
    options: Any = None
    format_ok: bool = True


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


def _fields(obj: Any) -> Trajectory:
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    missing = [k for k in ("id", "image_size", "rationale", "actions", "answer", "gt_answer") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    size = obj["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int | float) and v > 0 for v in size)):
        raise ValueError(f"'image_size' must be [W, H] with positive numbers, got {size!r}"[:200])
    if not isinstance(obj["actions"], list):
        raise ValueError("'actions' must be a list of boxes or nulls")
    answer = obj["answer"]
    if isinstance(answer, list):
        answer = _box(answer, "'answer' (a box answer)")
    elif answer is not None and not isinstance(answer, str):
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
    return Trajectory(
        id=str(obj["id"]),
        image_size=(float(size[0]), float(size[1])),
        chain=_chain(obj["rationale"]),
        actions=tuple(None if a is None else _box(a, f"action {k}") for k, a in enumerate(obj["actions"])),
        answer=answer,
        gt_answer=obj["gt_answer"],
        answer_type=obj.get("answer_type"),
        options=obj.get("options"),
        format_ok=bool(obj.get("format_ok", True)),
    )


def parse_line(obj: Any, path: str | Path, lineno: int) -> Trajectory:
    """Validate one decoded line; ``TrajectoryError("<path>:<lineno>: <what is wrong>")`` otherwise."""
    try:
        return _fields(obj)
    except ValueError as exc:
        raise TrajectoryError(f"{path}:{lineno}: {exc}") from None


def read_trajectories(path: Path) -> Iterator[Trajectory]:
    """Parse a JSONL file lazily (blank lines skipped); the first bad line raises ``TrajectoryError``."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise TrajectoryError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            yield parse_line(obj, path, lineno)


def score_line(t: Trajectory, cfg: RewardConfig) -> dict[str, Any]:
    """The output object of one trajectory (see the module docstring)."""
    b = score_episode(
        t.actions, t.answer, t.chain, t.gt_answer, image_size=t.image_size, answer_type=t.answer_type,
        options=t.options, format_ok=t.format_ok, cfg=cfg,
    )
    labels = [
        {
            "kind": lab.kind.value,
            "fidelity": lab.fidelity,
            "matched_step": lab.matched_step,
            "coverage_gain": lab.coverage_gain,
            "reason": lab.reason,
            "credit": credit,
        }
        for lab, credit in zip(b.labels, b.per_action, strict=True)
    ]
    return {"id": t.id, "labels": labels, "components": b.components, "total": b.total, "config": cfg.to_dict()}


def score_file(path: Path, cfg: RewardConfig, out: IO[bytes]) -> int:
    """Score every line of ``path`` into ``out`` (JSON lines); returns the number of lines written.

    Lines are validated before anything is written: a bad line anywhere leaves ``out`` empty.
    """
    results = [score_line(t, cfg) for t in read_trajectories(path)]
    for r in results:
        out.write(orjson.dumps(r) + b"\n")
    return len(results)
