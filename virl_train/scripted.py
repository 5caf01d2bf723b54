"""A scripted policy: episodes made from the TRUE chain and answer, with seeded mistakes, written as a trajectory log.

It stands in for a trained model where one is needed only for its logged episodes (the review-queue loop test and
``benchmarks/queue_loop.py``): it looks where the true chain says, so wherever the corpus's chain is wrong the
episodes disagree with the corpus, as a good policy's would. Torch-free.

Per record and sample (``ScriptedPolicy`` rates; one ``numpy.random.Generator`` whose ``SeedSequence`` mixes the
seed, the record id's CRC-32 and the sample index, so samples are independent):

- each true step is looked at unless skipped (``p_skip``) or replaced by a crop on another known object
  (``p_wrong_crop``; needs ``objects``): one crop per box of the step (a counting step looks at each object), every
  side jittered by up to ``jitter`` px;
- the answer is the true one, or with ``p_wrong_answer`` another one (the number + 1, else ``"none"``).

Lines are built by ``virl_train.trajectories.trajectory_row`` against the CORPUS record (``rationale`` and
``gt_answer`` are what the corpus says; the reward is scored against it), ``source`` "eval", ``sample`` the index.

Example:
    >>> from virl_data.miners.shapes import ShapesConfig, generate
    >>> rec = next(generate(1, seed=0, config=ShapesConfig(image_size=(128, 128))))
    >>> row = scripted_rows([rec], [rec], ScriptedPolicy(samples=1, p_skip=0, p_wrong_crop=0, p_wrong_answer=0))[0]
    >>> row["answer"] == rec.answer, len(row["actions"]) == len(rec.boxes), row["reward"]["components"]["accuracy"]
    (True, True, 1.0)
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from virl_data.core.types import Box, RationaleRecord
from virl_train.rewards import RewardConfig, score_record
from virl_train.trajectories import trajectory_row
from virl_train.types import Action, ActionKind, Episode


@dataclass(frozen=True)
class ScriptedPolicy:
    """Mistake rates of the scripted policy (module docstring) and the number of samples per record."""

    samples: int = 8
    jitter: float = 2.0
    p_skip: float = 0.1
    p_wrong_crop: float = 0.15
    p_wrong_answer: float = 0.15
    seed: int = 0


def _wrong_answer(answer: str) -> str:
    return str(int(answer) + 1) if answer.strip().isdigit() else "none"


def _crops(truth: RationaleRecord, others: Sequence[Box], rng: np.random.Generator, p: ScriptedPolicy) -> list[Box]:
    w, h = truth.image.width, truth.image.height
    out = []
    for step in truth.chain:
        roll = rng.random()
        if roll < p.p_skip:
            continue
        if roll < p.p_skip + p.p_wrong_crop and others:
            out.append(others[int(rng.integers(len(others)))])
            continue
        for b in step.boxes:
            j = rng.uniform(-p.jitter, p.jitter, size=4)
            out.append(Box(max(0.0, b.x1 + j[0]), max(0.0, b.y1 + j[1]), min(w, b.x2 + j[2]), min(h, b.y2 + j[3])))
    return out


def scripted_episode(
    truth: RationaleRecord, p: ScriptedPolicy, sample: int, objects: Sequence[Box] = ()
) -> Episode:
    """One episode of the scripted policy on ``truth`` (the correct record)."""
    rng = np.random.default_rng([p.seed, zlib.crc32(truth.id.encode()), sample])
    chain_boxes = set(truth.boxes)
    others = [b for b in objects if b not in chain_boxes]
    crops = _crops(truth, others, rng, p)
    answer = _wrong_answer(truth.answer) if rng.random() < p.p_wrong_answer else truth.answer
    actions = tuple(Action(turn=k, kind=ActionKind.CROP, box=b) for k, b in enumerate(crops))
    actions += (Action(turn=len(crops), kind=ActionKind.ANSWER, answer=answer),)
    return Episode(record_id=truth.id, actions=actions, answer=answer, n_turns=len(actions))


def scripted_rows(
    truth: Sequence[RationaleRecord],
    corpus: Sequence[RationaleRecord],
    p: ScriptedPolicy = ScriptedPolicy(),
    *,
    objects: Callable[[RationaleRecord], Sequence[Box]] | None = None,
    cfg: RewardConfig | None = None,
) -> list[dict[str, Any]]:
    """Trajectory-log lines of ``p.samples`` scripted episodes per record: ``truth[i]`` drives the policy,
    ``corpus[i]`` (same id) is what the line and the reward see. ``objects(record)`` gives the scene's objects for
    wrong crops (default: none, so no wrong crops)."""
    cfg = cfg or RewardConfig.preset("full")
    rows = []
    for i, (t, rec) in enumerate(zip(truth, corpus, strict=True)):
        if t.id != rec.id:
            raise ValueError(f"truth and corpus disagree at {i}: {t.id} vs {rec.id}")
        objs = objects(t) if objects else ()
        for s in range(p.samples):
            ep = scripted_episode(t, p, s, objs)
            rows.append(trajectory_row(ep, rec, score_record(ep, rec, cfg), cfg, source="eval", step=None, group=i,
                                       sample=s))
    return rows


__all__ = ["ScriptedPolicy", "scripted_episode", "scripted_rows"]
