"""What a review changed: two corpora compared record by record (matched by id).

A record *changed* when its effective chain (``merge.effective``: the latest correction, else the mined chain), its
effective answer or its status differs between BEFORE and AFTER. Records only in one of them are counted as added /
removed. With the queue the review worked from, the changes are also counted by the queue reason of each record
(``not queued`` for changed records the queue did not list).

Example:
    >>> from virl_data.core.types import Box, ImageRef, Provenance, RationaleRecord, RationaleStep, Status
    >>> a = RationaleRecord("r", ImageRef("a.png", 9, 9), "q", "red", (RationaleStep((Box(0, 0, 4, 4),), "x"),),
    ...                     Provenance("t"))
    >>> b = dataclasses.replace(a, answer="blue", status=Status.REVIEWED)
    >>> d = diff_records([a], [b]); [(c.id, c.fields) for c in d.changed], d.by_field
    ([('r', ('answer', 'status'))], {'chain': 0, 'answer': 1, 'status': 1})
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from virl_data.core.types import RationaleRecord
from virl_data.review.merge import effective

FIELDS = ("chain", "answer", "status")
NOT_QUEUED = "not queued"


@dataclass(frozen=True)
class Change:
    """One changed record: which of ``FIELDS`` changed, the status before → after, the verdict of its latest review
    in AFTER (None without one) and its queue reason (None without a queue)."""

    id: str
    fields: tuple[str, ...]
    status: tuple[str, str]
    verdict: str | None = None
    reason: str | None = None


@dataclass
class DiffResult:
    """Changed records (in AFTER's order), ids added / removed, unchanged count, counts by field, verdict, reason."""

    changed: list[Change]
    added: list[str]
    removed: list[str]
    unchanged: int
    by_field: dict[str, int]
    by_verdict: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["changed"] = [dataclasses.asdict(c) for c in self.changed]
        return out


def _changed_fields(a: RationaleRecord, b: RationaleRecord) -> tuple[str, ...]:
    ea, eb = effective(a), effective(b)
    out = []
    if ea.chain != eb.chain:
        out.append("chain")
    if ea.answer != eb.answer:
        out.append("answer")
    if a.status != b.status:
        out.append("status")
    return tuple(out)


def diff_records(
    before: Sequence[RationaleRecord], after: Sequence[RationaleRecord], *, reasons: Mapping[str, str] | None = None
) -> DiffResult:
    """Compare two corpora (module docstring); ``reasons`` maps record id → queue reason."""
    old = {r.id: r for r in before}
    new_ids = {r.id for r in after}
    changed, added, unchanged = [], [], 0
    for b in after:
        a = old.get(b.id)
        if a is None:
            added.append(b.id)
            continue
        fields = _changed_fields(a, b)
        if not fields:
            unchanged += 1
            continue
        verdict = b.reviews[-1].verdict if len(b.reviews) > len(a.reviews) else None
        reason = None if reasons is None else reasons.get(b.id, NOT_QUEUED)
        changed.append(Change(b.id, fields, (a.status.value, b.status.value), verdict, reason))
    removed = [r.id for r in before if r.id not in new_ids]
    by_field = {f: sum(f in c.fields for c in changed) for f in FIELDS}
    by_verdict = dict(Counter(c.verdict or "(no new review)" for c in changed))
    by_reason = dict(Counter(c.reason for c in changed if c.reason is not None))
    return DiffResult(changed, added, removed, unchanged, by_field, by_verdict, by_reason)


__all__ = ["FIELDS", "NOT_QUEUED", "Change", "DiffResult", "diff_records"]
