"""Human review results merged back into the corpus: append-only, idempotent, never losing the mined original.

Review tools (``virl_data.integrations.fiftyone``, ``virl_data.integrations.labelstudio``) turn what a person did
into ``ReviewEdit`` s; ``merge_reviews`` appends them to the records::

    records, report = merge_reviews(records, edits)
    print(report.summary())   # "applied 3, unchanged 1, unknown ids 0, invalid 1"

Rules:

- The mined ``chain`` and ``answer`` are never overwritten; each ``Review`` is appended to ``record.reviews``.
  ``effective(record)`` gives the record as a person last corrected it (what export and training use).
- Status: ``accept`` / ``fix`` → ``reviewed``; ``reject`` → ``rejected``.
- Idempotent: a review equal to one the record already carries (same tool, reviewer, verdict, chain, answer, note;
  the timestamp ``at`` ignored) is not appended again, so pulling twice changes nothing the second time.
- Nothing is lost: every corpus record comes back (same order, same count); an edit naming an unknown id is
  counted in ``report.unknown_ids``; a corrected chain with an empty box or a box outside the image (beyond
  ``tol`` pixels) is not applied and is listed in ``report.invalid`` with its reason.
- A record whose sample or task a reviewer deleted in the tool is a reviewer's decision too: the tool's pull sends a
  ``reject`` review whose note starts with ``DELETED_IN_REVIEW`` (``deletion_review``) and lists the id in
  ``report.deleted``.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from virl_data.core.errors import VirlError
from virl_data.core.types import Box, RationaleRecord, RationaleStep, Review, Status

VERDICTS = ("accept", "reject", "fix")
DELETED_IN_REVIEW = "deleted_in_review"
"""The note code of the ``reject`` review recorded for a record whose sample/task was deleted in the review tool."""
_STATUS = {"accept": Status.REVIEWED, "fix": Status.REVIEWED, "reject": Status.REJECTED}


class ReviewError(VirlError):
    """A review that cannot be understood at all (unknown verdict)."""


@dataclass(frozen=True, slots=True)
class ReviewEdit:
    """What a review tool says about one record: the record id and the person's ``Review``."""

    record_id: str
    review: Review

    def __post_init__(self) -> None:
        if self.review.verdict not in VERDICTS:
            raise ReviewError(
                f"review of {self.record_id}: unknown verdict {self.review.verdict!r}; use one of {', '.join(VERDICTS)}"
            )


@dataclass
class MergeReport:
    """Counts of one merge: reviews appended, reviews already present, unknown ids, refused corrections, and the
    records whose sample/task was deleted in the tool (each also one ``reject`` review, applied or unchanged)."""

    applied: int = 0
    unchanged: int = 0
    unknown_ids: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line, e.g. ``applied 3, unchanged 1, unknown ids 0, invalid 1`` (``, deleted in review 1`` appended
        when a sample/task was deleted)."""
        line = (
            f"applied {self.applied}, unchanged {self.unchanged}, unknown ids {len(self.unknown_ids)}, "
            f"invalid {len(self.invalid)}"
        )
        return line + (f", deleted in review {len(self.deleted)}" if self.deleted else "")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def deletion_review(tool: str, reviewer: str, at: str, where: str) -> Review:
    """The ``reject`` review of a record whose sample/task was deleted in ``tool`` (``where``: the dataset or
    project), with the note ``"deleted_in_review: ..."``."""
    note = f"{DELETED_IN_REVIEW}: its {tool} sample was deleted from {where}"
    return Review(tool=tool, reviewer=reviewer, at=at, verdict="reject", note=note)


def _key(review: Review) -> tuple[object, ...]:
    return (review.tool, review.reviewer, review.verdict, review.chain, review.answer, review.note)


def chain_problem(chain: Sequence[RationaleStep], width: float, height: float, tol: float = 0.5) -> str | None:
    """Why a corrected chain cannot be applied (``"empty_chain"``, ``"empty_step_N"``, ``"empty_box_step_N"``,
    ``"box_outside_image_step_N"``), or None when it is usable."""
    if not chain:
        return "empty_chain"
    for j, step in enumerate(chain):
        if not step.boxes:
            return f"empty_step_{j}"
        for b in step.boxes:
            if b.w <= 0 or b.h <= 0:
                return f"empty_box_step_{j}"
            if b.x1 < -tol or b.y1 < -tol or b.x2 > width + tol or b.y2 > height + tol:
                return f"box_outside_image_step_{j}"
    return None


def merge_reviews(
    records: Sequence[RationaleRecord], edits: Iterable[ReviewEdit], *, tol: float = 0.5
) -> tuple[list[RationaleRecord], MergeReport]:
    """Append each edit's review to its record (see the module docstring); returns all records and the report."""
    report = MergeReport()
    index = {r.id: i for i, r in enumerate(records)}
    pending: dict[int, list[Review]] = defaultdict(list)
    for edit in edits:
        i = index.get(edit.record_id)
        if i is None:
            report.unknown_ids.append(edit.record_id)
            continue
        rec, review = records[i], edit.review
        if review.chain is not None:
            problem = chain_problem(review.chain, rec.image.width, rec.image.height, tol)
            if problem:
                report.invalid.append((edit.record_id, problem))
                continue
        pending[i].append(review)
    out = list(records)
    for i, reviews in pending.items():
        rec = out[i]
        seen = {_key(v) for v in rec.reviews}
        new = []
        for review in reviews:
            if _key(review) in seen:
                report.unchanged += 1
                continue
            seen.add(_key(review))
            new.append(review)
        if new:
            report.applied += len(new)
            out[i] = dataclasses.replace(rec, reviews=rec.reviews + tuple(new), status=_STATUS[new[-1].verdict])
    return out, report


def effective(record: RationaleRecord) -> RationaleRecord:
    """``record`` with its latest chain and answer corrections applied (the mined record when none)."""
    chain, answer = record.chain, record.answer
    for review in record.reviews:
        if review.chain is not None:
            chain = review.chain
        if review.answer is not None:
            answer = review.answer
    if chain is record.chain and answer == record.answer:
        return record
    return dataclasses.replace(record, chain=chain, answer=answer)


def pushed_to_json(chain: Sequence[RationaleStep], answer: str, record_id: str | None = None) -> str:
    """The chain and answer a review tool was given, as compact JSON stored beside the sample/task, so a pull can
    tell what the reviewer changed (floats round-trip exactly): ``{"answer", "chain": [{"b", "p", "r", "s"}]}``,
    plus ``"id"`` (the record pushed) when ``record_id`` is given."""
    steps = [
        {"b": [list(b.as_tuple()) for b in s.boxes], "p": s.phrase, "r": s.role, "s": s.source_ref} for s in chain
    ]
    data = {"answer": answer, "chain": steps} | ({"id": record_id} if record_id is not None else {})
    return orjson.dumps(data).decode()


def pushed_id(text: str | None) -> str | None:
    """The record id a ``pushed_to_json`` text names, or None (none stored, or not readable)."""
    try:
        data = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def pushed_from_json(text: str) -> tuple[tuple[RationaleStep, ...], str]:
    """The inverse of ``pushed_to_json``: ``(chain, answer)``."""
    data = orjson.loads(text)
    chain = tuple(
        RationaleStep(boxes=tuple(Box(*b) for b in s["b"]), phrase=s["p"], role=s["r"], source_ref=s["s"])
        for s in data["chain"]
    )
    return chain, data["answer"]


__all__ = [
    "DELETED_IN_REVIEW",
    "VERDICTS",
    "MergeReport",
    "ReviewEdit",
    "ReviewError",
    "chain_problem",
    "deletion_review",
    "effective",
    "merge_reviews",
    "pushed_from_json",
    "pushed_id",
    "pushed_to_json",
]
