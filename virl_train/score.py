"""Score logged trajectories offline with the training reward (``virl-train score``): same code path, ``score_episode``.

Input: a trajectory log (``virl_train.trajectories``; what ``virl-train train`` / ``eval`` write as
``trajectories.jsonl``), read as is. The minimal hand-written line, boxes in ORIGINAL-image pixels::

    {"id": "q1", "image_size": [W, H], "rationale": [[[x1, y1, x2, y2], ...], ...],
     "actions": [[x1, y1, x2, y2] or null, ...], "answer": "red" or null, "gt_answer": "red",
     "answer_type": optional, "options": optional list or {letter: text}, "format_ok": optional bool}

``null`` actions are malformed model actions (erroneous, format penalty). Output: one JSON object per input line,
in order: ``id`` (and ``source`` / ``step`` / ``group`` / ``sample`` when the line has them), ``total``,
``components``, ``labels`` (kind, fidelity, matched_step, coverage_gain, reason, credit per action), ``config`` (the
``RewardConfig`` as a dict) and, for a logged line, ``logged_total``: the total the run logged under its own config.
Re-scored with that same config, ``total``, ``components`` and ``labels`` equal the logged ``reward`` exactly. A line
that is not such an object raises ``TrajectoryError`` naming the file and line.

Example:
    >>> line = {"id": "q", "image_size": [100, 100], "rationale": [[[0, 0, 10, 10]]], "actions": [[0, 0, 10, 10]],
    ...         "answer": "red", "gt_answer": "red"}
    >>> score_line(parse_line(line, "t.jsonl", 1), RewardConfig.preset("full"))["total"]
    1.5
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from virl_data.core.errors import EmptyInputError
from virl_train.rewards import RewardConfig, score_episode
from virl_train.trajectories import Trajectory, TrajectoryError, parse_line, read_trajectories, reward_detail

ORIGIN = ("source", "step", "group", "sample")


@dataclass(frozen=True)
class ScoreSummary:
    """What re-scoring a file changed: lines scored, mean re-scored total, and over the lines that carry a logged
    reward, their count, mean logged total and how many totals differ (|Δ| > 1e-9)."""

    n: int
    mean_total: float
    n_logged: int = 0
    mean_logged: float = 0.0
    n_changed: int = 0

    def describe(self) -> str:
        """One line, e.g. ``16 trajectories: mean total 0.125 (logged 0.210); 9 of 16 totals changed``."""
        text = f"{self.n} trajectories: mean total {self.mean_total:.3f}"
        if self.n_logged:
            text += f" (logged {self.mean_logged:.3f}); {self.n_changed} of {self.n_logged} totals changed"
        return text


def score_line(t: Trajectory, cfg: RewardConfig) -> dict[str, Any]:
    """The output object of one trajectory (see the module docstring)."""
    b = score_episode(
        t.actions, t.answer, t.chain, t.gt_answer, image_size=t.image_size, answer_type=t.answer_type,
        options=t.options, format_ok=t.format_ok, cfg=cfg,
    )
    origin = {k: getattr(t, k) for k in ORIGIN if getattr(t, k) is not None}
    out = {"id": t.id, **origin, **reward_detail(b, cfg)}
    if t.logged is not None and "total" in t.logged:
        out["logged_total"] = t.logged["total"]
    return out


def score_file(path: Path, cfg: RewardConfig, out: IO[bytes]) -> ScoreSummary:
    """Score every line of ``path`` into ``out`` (JSON lines); returns what changed against the logged rewards.

    Lines are validated before anything is written: a bad line anywhere, or no line at all (``EmptyInputError``: a
    mean over nothing is not 0), leaves ``out`` empty.
    """
    results = [score_line(t, cfg) for t in read_trajectories(path)]
    if not results:
        raise EmptyInputError(f"{path} holds no trajectories: nothing to score")
    for r in results:
        out.write(orjson.dumps(r) + b"\n")
    logged = [r for r in results if isinstance(r.get("logged_total"), int | float)]
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
    return ScoreSummary(
        n=len(results),
        mean_total=mean([r["total"] for r in results]),
        n_logged=len(logged),
        mean_logged=mean([r["logged_total"] for r in logged]),
        n_changed=sum(abs(r["total"] - r["logged_total"]) > 1e-9 for r in logged),
    )


__all__ = ["ScoreSummary", "TrajectoryError", "parse_line", "read_trajectories", "score_file", "score_line"]
