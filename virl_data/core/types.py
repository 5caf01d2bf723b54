"""The one record type that crosses every module border, and its parts.

All types are frozen, slotted dataclasses built from the standard library only, so importing them costs nothing
and they pickle cleanly. ``virl_data.core.schema`` turns them into Arrow/polars rows and HF ``datasets.Features``.

Box convention (the only one inside virl): absolute pixels ``x1, y1, x2, y2`` on the ORIGINAL image, floats,
``x1 < x2`` and ``y1 < y2`` for a valid box. Every other convention is converted in ``virl_data.core.boxconv``.

Example:
    >>> rec = RationaleRecord(
    ...     id="demo-1",
    ...     image=ImageRef(path="img/0.png", width=320, height=240),
    ...     question="What colour is the small square?",
    ...     answer="red",
    ...     chain=(RationaleStep(boxes=(Box(10, 10, 30, 30),), phrase="small square"),),
    ...     provenance=Provenance(source="shapes", source_split="train"),
    ... )
    >>> rec.status
    <Status.MINED: 'mined'>
    >>> rec.chain[0].boxes[0].area
    400.0
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

SCHEMA_VERSION = 1
"""Version of the on-disk record layout. Bump it with a converter in ``virl_data/migrations/``."""


class Status(str, enum.Enum):
    """Where a record stands in the flow: mined → accepted/rejected by checks → reviewed by a person."""

    MINED = "mined"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REVIEWED = "reviewed"


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in absolute pixels of the original image: ``(x1, y1)`` top-left, ``(x2, y2)`` bottom-right.

    >>> Box(0, 0, 4, 2).w, Box(0, 0, 4, 2).h, Box(0, 0, 4, 2).area
    (4.0, 2.0, 8.0)
    """

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        for name in ("x1", "y1", "x2", "y2"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def w(self) -> float:
        return self.x2 - self.x1

    @property
    def h(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        """Area, 0 for an inverted or degenerate box."""
        return max(self.w, 0.0) * max(self.h, 0.0)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image by path relative to a declared image root, with its recorded size in pixels."""

    path: str
    width: int
    height: int
    sha1: str | None = None


@dataclass(frozen=True, slots=True)
class RationaleStep:
    """One look in the chain: one or more boxes (a GQA step can name several objects) and the phrase they ground.

    ``role`` is optional (e.g. ``"context"`` / ``"target"``); ``source_ref`` is the native annotation id.
    """

    boxes: tuple[Box, ...]
    phrase: str = ""
    role: str | None = None
    source_ref: str | None = None


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a record came from. ``native_ids`` holds the source's own ids (question id, image id, ref id...)."""

    source: str
    source_split: str | None = None
    native_ids: tuple[tuple[str, str], ...] = ()
    miner: str = ""

    def native_id(self, key: str) -> str | None:
        return dict(self.native_ids).get(key)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one named check on one record.

    ``passed`` is False only for a failure; a check that could not run (e.g. no image root given) is recorded with
    ``skipped=True, passed=True`` and a reason saying why. ``score`` carries a measured value (e.g. zoom need).
    """

    name: str
    passed: bool
    reason: str | None = None
    score: float | None = None
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class Review:
    """A person's verdict from a review tool; the mined original is never overwritten, reviews are appended.

    ``verdict`` is ``accept`` | ``reject`` | ``fix``; ``chain`` / ``answer`` carry corrections when given.
    ``at`` is an ISO-8601 timestamp string.
    """

    tool: str
    reviewer: str
    at: str
    verdict: str
    chain: tuple[RationaleStep, ...] | None = None
    answer: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class RationaleRecord:
    """Question + answer + image + ordered chain of boxes, with provenance, check results, status and reviews."""

    id: str
    image: ImageRef
    question: str
    answer: str
    chain: tuple[RationaleStep, ...]
    provenance: Provenance
    answer_type: str | None = None
    question_type: str | None = None
    checks: tuple[CheckResult, ...] = ()
    status: Status = Status.MINED
    reviews: tuple[Review, ...] = ()
    split: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            object.__setattr__(self, "status", Status(self.status))

    @property
    def boxes(self) -> tuple[Box, ...]:
        """Every box of the chain in order (steps flattened)."""
        return tuple(b for step in self.chain for b in step.boxes)

    @property
    def failed_checks(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.passed)


def record_id(source: str, *native: str) -> str:
    """A stable id from the source name and its native ids: ``source-<16 hex of sha1>``.

    >>> record_id("gqa", "00155957") == record_id("gqa", "00155957")
    True
    >>> record_id("gqa", "00155957").startswith("gqa-")
    True
    """
    digest = hashlib.sha1("\x1f".join((source, *native)).encode()).hexdigest()[:16]
    return f"{source}-{digest}"


__all__ = [
    "SCHEMA_VERSION",
    "Box",
    "CheckResult",
    "ImageRef",
    "Provenance",
    "RationaleRecord",
    "RationaleStep",
    "Review",
    "Status",
    "record_id",
]
