"""The trainer's side of the trajectory log: a scored episode as one log line (``trajectory_row``) and a reward
breakdown as JSON (``reward_detail``). The format itself (fields, reading, writing, resume truncation) lives in
``virl_data.storage.trajectories``, the lower half, because ``virl-data queue`` reads the same files; its names are
re-exported here so the trainer imports one module.

Example:
    >>> from virl_train.rewards import RewardConfig
    >>> from virl_train.types import RewardBreakdown
    >>> reward_detail(RewardBreakdown(total=1.0, components={"accuracy": 1.0}), RewardConfig())["total"]
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from virl_data.core.types import RationaleRecord
from virl_data.storage.trajectories import (
    FILE_NAME,
    FORMAT_VERSION,
    Trajectory,
    TrajectoryError,
    TrajectoryLog,
    answer_json,
    parse_line,
    read_trajectories,
    truncate_steps,
    write_trajectories,
)
from virl_train.rewards import RewardConfig, episode_answer
from virl_train.types import ActionKind, Episode, RewardBreakdown


def reward_detail(b: RewardBreakdown, cfg: RewardConfig) -> dict[str, Any]:
    """A breakdown as JSON: ``total``, ``components``, ``labels`` (one per visual action, with its credit c_k) and
    ``config``. The logged ``reward`` of a line and the output of ``score`` are both this object."""
    labels = [
        {"kind": lab.kind.value, "fidelity": lab.fidelity, "matched_step": lab.matched_step,
         "coverage_gain": lab.coverage_gain, "reason": lab.reason, "credit": credit}
        for lab, credit in zip(b.labels, b.per_action, strict=True)
    ]  # fmt: skip
    return {"total": b.total, "components": b.components, "labels": labels, "config": cfg.to_dict()}


def trajectory_row(
    episode: Episode,
    record: RationaleRecord,
    breakdown: RewardBreakdown,
    cfg: RewardConfig,
    *,
    source: str,
    step: int | None,
    group: int,
    sample: int,
    turns: Sequence[str] = (),
) -> dict[str, Any]:
    """The log line of one scored episode (fields in ``virl_data.storage.trajectories``)."""
    visual = [a for a in episode.actions if a.kind is not ActionKind.ANSWER]
    boxes = [list(a.box.as_tuple()) if a.kind is ActionKind.CROP and a.box is not None else None for a in visual]
    return {
        "version": FORMAT_VERSION, "source": source, "step": step, "group": group, "sample": sample,
        "id": record.id, "question": record.question, "image_size": [record.image.width, record.image.height],
        "rationale": [[list(b.as_tuple()) for b in s.boxes] for s in record.chain],
        "gt_answer": record.answer, "answer_type": record.answer_type, "turns": list(turns),
        "actions": boxes,
        "action_errors": [a.error for a in visual],
        "answer": answer_json(episode_answer(episode, record.answer_type)),
        "format_ok": episode.format_ok,
        "reward": reward_detail(breakdown, cfg),
    }  # fmt: skip


__all__ = [
    "FILE_NAME",
    "FORMAT_VERSION",
    "Trajectory",
    "TrajectoryError",
    "TrajectoryLog",
    "parse_line",
    "read_trajectories",
    "reward_detail",
    "trajectory_row",
    "truncate_steps",
    "write_trajectories",
]
