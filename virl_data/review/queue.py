"""The review queue: where a trained policy and the rationale corpus disagree, ranked, with a named reason each.

A policy that answers right while looking somewhere else than the chain says, or that looks at an object the chain
lacks, is evidence against the *chain* as much as against the policy; a chain of tiny or duplicated boxes is
suspect on its own. ``rank`` turns an eval's (or a training run's) logged episodes (the trajectory log,
``virl_data.storage.trajectories``) and the corpus into a ranked list of ``QueueEntry`` s.

Criteria (each a named reason with a score in [0, 1]; ``E`` = the record's logged episodes, ``s`` = IoU, a crop
*hits* a box when ``s ≥ hit`` and *misses* it when ``s < miss``; a crop's overlap with a chain step is its best IoU
with the step's union box (as in ``virl_train.matching``) or any one box of the step (a counting step is also looked
at one object at a time); the chain and answer are the record's *effective* ones, ``merge.effective``):

=============================  =======================================================================================
reason                         score
=============================  =======================================================================================
``illusion``                   fraction of E answered right whose valid crops (≥ 1) all miss every chain step
``unlisted_object``            the largest fraction of E whose crops hit one and the same known object that matches
                               no chain box (s < hit to every chain box and step), with a crop off the chain (best
                               step overlap < hit): a chain lacking an object shows it in every episode, a policy's
                               slip on a random one; known objects: the shapes world rebuilds the scene
                               (``miners.shapes.scene_objects``), other sources use every chain box of the corpus
                               records on the same image
``wrong_answer_right_crops``   fraction of E answered wrong although every chain step is hit by some crop
``degenerate_chain``           1.0 when a chain box is tiny (area < ``tiny_frac`` of the image, or a side <
                               ``min_side`` px), degenerate, or two boxes overlap at s ≥ ``dup_iou`` (needs no
                               episode)
=============================  =======================================================================================

A record's ``score`` is its largest reason score and its ``reason`` that reason (ties in ``REASONS`` order); the
queue is sorted by score, then the sum of all reason scores, then id. Several sampled episodes per record (a
training log's group, or repeated evals) make the fractions graded: a chain that is wrong shows the disagreement in
every episode, a policy's slip in one.

Example:
    >>> from virl_data.core.types import Box, ImageRef, Provenance, RationaleRecord, RationaleStep
    >>> rec = RationaleRecord("r", ImageRef("a.png", 100, 100), "colour?", "red",
    ...                       (RationaleStep((Box(0, 0, 10, 10),), "x"),), Provenance("test"))
    >>> ep = PolicyEpisode("r", crops=(Box(50, 50, 60, 60),), answer="red")
    >>> entry = score_record(rec, [ep], objects=(Box(0, 0, 10, 10), Box(50, 50, 60, 60)))
    >>> entry.reason, entry.score, sorted(entry.scores)
    ('illusion', 1.0, ['illusion', 'unlisted_object'])
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from virl_data.core import boxes
from virl_data.core.answers import score_answer
from virl_data.core.errors import ConfigError, CorpusReadError
from virl_data.core.types import Box, RationaleRecord, Status
from virl_data.review.merge import effective
from virl_data.storage.corpus import atomic_path
from virl_data.storage.trajectories import read_trajectories

REASONS = ("illusion", "unlisted_object", "wrong_answer_right_crops", "degenerate_chain")
EPISODE_REASONS = REASONS[:3]  # the reasons that need episodes


@dataclass(frozen=True)
class QueueConfig:
    """Thresholds of the criteria (module docstring). ``hit``/``miss`` default to the matching module's ``tau_hit``
    and ``tau_err``; ``tiny_frac``, ``min_side`` and ``dup_iou`` to the verify checks' spirit (4 px², IoU 0.9)."""

    hit: float = 0.5
    miss: float = 0.1
    tiny_frac: float = 1e-4
    min_side: float = 2.0
    dup_iou: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 < self.miss <= self.hit <= 1.0:
            raise ConfigError(f"queue thresholds need 0 < miss <= hit <= 1, got miss={self.miss}, hit={self.hit}")


@dataclass(frozen=True)
class PolicyEpisode:
    """What the queue needs of one logged episode (read from a trajectory log): the record id, the crops (None = an
    invalid action), the answer, and how to score it (``answer_type``, ``options``)."""

    record_id: str
    crops: tuple[Box | None, ...] = ()
    answer: str | None = None
    answer_type: str | None = None
    options: Any = None


@dataclass(frozen=True)
class QueueEntry:
    """One queued record: its ``rank`` (1 = first), the top ``reason`` and ``score``, every reason's score, how many
    episodes it had, and the evidence: the crops and answer of the first episode showing the top reason."""

    record_id: str
    reason: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    n_episodes: int = 0
    crops: tuple[Box, ...] = ()
    policy_answer: str | None = None
    rank: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "id": self.record_id, "reason": self.reason, "score": self.score, "scores": self.scores,
            "n_episodes": self.n_episodes, "crops": [list(b.as_tuple()) for b in self.crops],
            "policy_answer": self.policy_answer,
        }  # fmt: skip

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> QueueEntry:
        return cls(record_id=str(obj["id"]), reason=str(obj["reason"]), score=float(obj["score"]),
                   scores={str(k): float(v) for k, v in (obj.get("scores") or {}).items()},
                   n_episodes=int(obj.get("n_episodes", 0)), crops=tuple(Box(*b) for b in obj.get("crops") or ()),
                   policy_answer=obj.get("policy_answer"), rank=int(obj.get("rank", 0)))  # fmt: skip


# --- reading episodes ------------------------------------------------------------------------------------------------
def read_episodes(path: str | Path, *, min_step: int | None = None) -> list[PolicyEpisode]:
    """The episodes of a trajectory log (``virl_data.storage.trajectories.read_trajectories``).

    ``min_step`` keeps, of a training log, only the episodes of optimizer steps ≥ it (the early policy's guesses say
    little about the corpus); lines without a step (evaluation) are always kept."""
    return [
        PolicyEpisode(t.id, t.actions, t.answer, t.answer_type, t.options)
        for t in read_trajectories(Path(path))
        if min_step is None or t.step is None or t.step >= min_step
    ]


# --- geometry of one record ------------------------------------------------------------------------------------------
def _steps(record: RationaleRecord) -> np.ndarray:
    """``(M, 4)`` union box per step (the matching module's convention)."""
    if not record.chain:
        return np.zeros((0, 4))
    return np.stack([boxes.union(boxes.as_array(list(s.boxes))) for s in record.chain])


def step_overlaps(crops: np.ndarray, record: RationaleRecord) -> np.ndarray:
    """``(K, M)``: each crop's IoU with each step, the best of the step's union box and its single boxes."""
    out = np.zeros((len(crops), len(record.chain)))
    if not len(crops):
        return out
    for j, step in enumerate(record.chain):
        targets = boxes.as_array(list(step.boxes))
        targets = np.concatenate([targets, boxes.union(targets)[None]]) if len(targets) > 1 else targets
        out[:, j] = boxes.iou_matrix(crops, targets).max(axis=1)
    return out


def _valid(crops: Sequence[Box | None], width: float, height: float) -> np.ndarray:
    """The crops that can be judged, ``(K, 4)``: not malformed, not degenerate, not wholly outside the image."""
    kept = [b for b in crops if b is not None and b.w > 0 and b.h > 0 and all(map(math.isfinite, b.as_tuple()))]
    arr = boxes.as_array(kept) if kept else np.zeros((0, 4))
    if len(arr):
        inside = (arr[:, 0] < width) & (arr[:, 1] < height) & (arr[:, 2] > 0) & (arr[:, 3] > 0)
        arr = arr[inside]
    return arr


def chain_problem(record: RationaleRecord, cfg: QueueConfig = QueueConfig()) -> str | None:
    """Why the chain's boxes are suspect on their own (``tiny_box_step_J``, ``degenerate_box_step_J``,
    ``duplicate_box_steps_I_J``) or None. ``degenerate_chain`` scores 1.0 when this is not None.

    >>> from virl_data.core.types import ImageRef, Provenance, RationaleStep
    >>> step = RationaleStep((Box(0, 0, 10, 10),), "x")
    >>> chain_problem(RationaleRecord("r", ImageRef("a", 100, 100), "q", "a", (step, step), Provenance("t")))
    'duplicate_box_steps_0_1'
    """
    area = max(record.image.width, 0) * max(record.image.height, 0)
    flat = [(j, b) for j, s in enumerate(record.chain) for b in s.boxes]
    for j, b in flat:
        if not (b.w > 0 and b.h > 0) or not all(map(math.isfinite, b.as_tuple())):
            return f"degenerate_box_step_{j}"
        if min(b.w, b.h) < cfg.min_side or (area > 0 and b.area < cfg.tiny_frac * area):
            return f"tiny_box_step_{j}"
    if len(flat) > 1:
        s = boxes.iou_matrix(boxes.as_array([b for _, b in flat]), boxes.as_array([b for _, b in flat]))
        np.fill_diagonal(s, 0.0)
        i, k = np.unravel_index(int(np.argmax(s)), s.shape)
        if s[i, k] >= cfg.dup_iou:
            a, b = sorted((flat[i][0], flat[k][0]))
            return f"duplicate_box_steps_{a}_{b}"
    return None


def _unlisted(objects: Sequence[Box], record: RationaleRecord, steps: np.ndarray, cfg: QueueConfig) -> np.ndarray:
    """The known objects that match no chain box nor step union (IoU < hit to all), ``(O, 4)``."""
    if not objects:
        return np.zeros((0, 4))
    obj = boxes.as_array(list(objects))
    chain = np.concatenate([boxes.as_array(list(record.boxes)), steps]) if record.chain else steps
    if not len(chain):
        return obj
    return obj[boxes.iou_matrix(obj, chain).max(axis=1) < cfg.hit]


def episode_reasons(
    record: RationaleRecord, episode: PolicyEpisode, unlisted: np.ndarray, cfg: QueueConfig = QueueConfig()
) -> set[str]:
    """The episode-level reasons one episode shows for ``record`` (effective chain/answer already applied):
    ``illusion``, ``wrong_answer_right_crops`` and ``unlisted_object:<i>`` for each unlisted object ``i`` it hits."""
    crops = _valid(episode.crops, record.image.width, record.image.height)
    correct = score_answer(episode.answer, record.answer, answer_type=episode.answer_type or record.answer_type,
                           options=episode.options)  # fmt: skip
    found: set[str] = set()
    if not len(crops) or not record.chain:
        return found
    s = step_overlaps(crops, record)  # (K, M)
    if correct == 1.0 and bool((s < cfg.miss).all()):
        found.add("illusion")
    if correct == 0.0 and bool((s.max(axis=0) >= cfg.hit).all()):
        found.add("wrong_answer_right_crops")
    if len(unlisted):
        off_chain = s.max(axis=1) < cfg.hit
        hit_objects = boxes.iou_matrix(crops[off_chain], unlisted) >= cfg.hit  # (K_off, O)
        found |= {f"unlisted_object:{i}" for i in np.flatnonzero(hit_objects.any(axis=0))}
    return found


def score_record(
    record: RationaleRecord,
    episodes: Sequence[PolicyEpisode],
    *,
    objects: Sequence[Box] = (),
    cfg: QueueConfig = QueueConfig(),
) -> QueueEntry | None:
    """The queue entry of one record (None when no criterion fires): reason scores, top reason, evidence."""
    record = effective(record)
    unlisted = _unlisted(objects, record, _steps(record), cfg)
    shown = [episode_reasons(record, ep, unlisted, cfg) for ep in episodes]
    scores: dict[str, float] = {}
    if episodes:
        n = len(episodes)
        scores = {r: sum(r in s for s in shown) / n for r in ("illusion", "wrong_answer_right_crops")}
        per_object = [sum(f"unlisted_object:{i}" in s for s in shown) for i in range(len(unlisted))]
        scores["unlisted_object"] = max(per_object, default=0) / n
    if chain_problem(record, cfg) is not None:
        scores["degenerate_chain"] = 1.0
    scores = {r: v for r, v in scores.items() if v > 0}
    if not scores:
        return None
    reason = max(REASONS, key=lambda r: (scores.get(r, 0.0), -REASONS.index(r)))
    witness = next((ep for ep, s in zip(episodes, shown) if any(x.split(":")[0] == reason for x in s)),
                   episodes[0] if episodes else None)
    crops = tuple(b for b in witness.crops if b is not None) if witness else ()
    return QueueEntry(record.id, reason, scores[reason], scores, len(episodes), crops,
                      witness.answer if witness else None)  # fmt: skip


# --- known objects ---------------------------------------------------------------------------------------------------
def known_objects(records: Sequence[RationaleRecord]) -> Callable[[RationaleRecord], tuple[Box, ...]]:
    """``record → its image's known objects``: the shapes scene when it can be rebuilt, else every chain box (mined
    and reviewed) of the records on the same image, duplicates (IoU ≥ 0.9) removed."""
    from virl_data.miners.shapes import scene_objects

    by_image: dict[str, list[Box]] = defaultdict(list)
    for r in records:
        by_image[r.image.path].extend(r.boxes)
        for review in r.reviews:
            by_image[r.image.path].extend(b for s in review.chain or () for b in s.boxes)

    distinct: dict[str, tuple[Box, ...]] = {}  # per image: computed once, shared by the records on that image

    def objects(record: RationaleRecord) -> tuple[Box, ...]:
        scene = scene_objects(record)
        if scene is not None:
            return scene
        path = record.image.path
        if path not in distinct:
            kept: list[Box] = []
            for b in by_image.get(path, ()):
                new = not kept or boxes.iou_matrix(boxes.as_array([b]), boxes.as_array(kept)).max() < 0.9
                if b.w > 0 and b.h > 0 and new:
                    kept.append(b)
            distinct[path] = tuple(kept)
        return distinct[path]

    return objects


# --- the queue -------------------------------------------------------------------------------------------------------
@dataclass
class QueueResult:
    """The ranked entries (after ``top`` / ``reasons``), how many records were in scope, how many episodes were read
    and matched, the episode ids not in the corpus, and the counts by top reason over the whole (untruncated) queue."""

    entries: list[QueueEntry]
    n_records: int
    n_episodes: int
    unknown_ids: list[str]
    by_reason: dict[str, int]


def _parse_reasons(reasons: Iterable[str] | None) -> tuple[str, ...]:
    chosen = tuple(reasons or REASONS)
    bad = [r for r in chosen if r not in REASONS]
    if bad:
        raise ConfigError(f"unknown queue reason(s) {', '.join(bad)}; use {', '.join(REASONS)}")
    return chosen


def rank(
    records: Sequence[RationaleRecord],
    episodes: Iterable[PolicyEpisode],
    *,
    top: int | None = None,
    reasons: Iterable[str] | None = None,
    split: str | None = None,
    cfg: QueueConfig = QueueConfig(),
    objects: Callable[[RationaleRecord], Sequence[Box]] | None = None,
) -> QueueResult:
    """Rank the records of ``split`` (all splits when None; rejected records left out) by disagreement.

    ``reasons`` keeps only entries whose top reason is listed, and scores them by those reasons alone; ``top`` keeps
    the first N. ``objects`` defaults to ``known_objects(records)``.
    """
    chosen = _parse_reasons(reasons)
    if top is not None and top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    scope = [r for r in records if r.status is not Status.REJECTED and (split is None or r.split == split)]
    in_corpus = {r.id for r in records}
    by_id: dict[str, list[PolicyEpisode]] = defaultdict(list)
    unknown: dict[str, None] = {}  # insertion-ordered set: a log of another corpus has every id unknown
    n_read = 0
    for ep in episodes:
        n_read += 1
        if ep.record_id in in_corpus:
            by_id[ep.record_id].append(ep)
        else:
            unknown[ep.record_id] = None
    objects = objects or known_objects(records)
    entries = []
    for record in scope:
        entry = score_record(record, by_id.get(record.id, ()), objects=objects(record), cfg=cfg)
        if entry is None:
            continue
        kept = {r: v for r, v in entry.scores.items() if r in chosen}
        if not kept:
            continue
        if kept != entry.scores:
            top_reason = max(chosen, key=lambda r: (kept.get(r, 0.0), -REASONS.index(r)))
            entry = dataclasses.replace(entry, reason=top_reason, score=kept[top_reason], scores=kept)
        entries.append(entry)
    entries.sort(key=lambda e: (-e.score, -sum(e.scores.values()), e.record_id))
    by_reason: dict[str, int] = {r: sum(e.reason == r for e in entries) for r in chosen}
    ranked = [dataclasses.replace(e, rank=i + 1) for i, e in enumerate(entries[:top] if top else entries)]
    return QueueResult(ranked, len(scope), n_read, list(unknown), by_reason)


def precision_at(entries: Sequence[QueueEntry], relevant: set[str], k: int) -> float:
    """Top-k precision: the fraction of the first ``k`` entries whose record is in ``relevant``.

    >>> precision_at([QueueEntry("a", "illusion", 1.0), QueueEntry("b", "illusion", 0.5)], {"a"}, 2)
    0.5
    """
    head = list(entries[:k])
    return sum(e.record_id in relevant for e in head) / len(head) if head else 0.0


# --- files -----------------------------------------------------------------------------------------------------------
def write_queue(entries: Sequence[QueueEntry], path: str | Path) -> Path:
    """The queue as JSON lines (``QueueEntry.to_json``), in rank order, written atomically."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        for e in entries:
            fh.write(orjson.dumps(e.to_json()) + b"\n")
    return Path(path)


def read_queue(path: str | Path) -> list[QueueEntry]:
    """The entries of a queue file; a bad line is a ``CorpusReadError`` naming file and line."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise CorpusReadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    out = []
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            out.append(QueueEntry.from_json(orjson.loads(raw)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorpusReadError(f"{path}:{lineno}: not a queue entry ({type(exc).__name__}: {exc})"[:300]) from None
    return out


__all__ = [
    "EPISODE_REASONS",
    "REASONS",
    "PolicyEpisode",
    "QueueConfig",
    "QueueEntry",
    "QueueResult",
    "chain_problem",
    "episode_reasons",
    "known_objects",
    "precision_at",
    "rank",
    "read_episodes",
    "read_queue",
    "score_record",
    "write_queue",
]
