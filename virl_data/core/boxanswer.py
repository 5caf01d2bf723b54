"""Box answers: a grounding record's gold answer is its target box, stored in the record's ``answer`` string.

A record with ``answer_type == "box"`` ("where is the X?") answers with a box, not a word. Its ``answer`` holds
that box in the canonical convention (absolute pixels ``x1, y1, x2, y2`` of the ORIGINAL image, like every box of
the record), written as ``"[x1, y1, x2, y2]"``: integral values without a decimal point, others as Python writes
the float (``repr``), so ``parse_box(format_box(b)) == b`` exactly. Keeping it in the answer string keeps ONE record
type and schema: Parquet, JSONL and HF exports carry it as is, a reviewer's corrected answer is a box string too,
and ``virl_data.core.answers.score_answer`` scores a predicted box against it by IoU.

The policy never writes this form: it answers in its own box convention (``virl_train.actions`` converts its
``<answer>[...]</answer>`` box as it converts crops).

Example:
    >>> from virl_data.core.types import Box
    >>> format_box(Box(10, 20.5, 30, 40))
    '[10, 20.5, 30, 40]'
    >>> parse_box("[10, 20.5, 30, 40]")
    Box(x1=10.0, y1=20.5, x2=30.0, y2=40.0)
    >>> parse_box("bush") is None, parse_box("[5, 5, 1, 9]") is None
    (True, True)
"""

from __future__ import annotations

import math
import re

from virl_data.core.types import Box, RationaleRecord

BOX = "box"
"""The ``answer_type`` of a record whose answer is a box."""

_BOX_TEXT = re.compile(
    r"\A\s*\[\s*([-+]?[\d.eE+-]+)\s*,\s*([-+]?[\d.eE+-]+)\s*,\s*([-+]?[\d.eE+-]+)\s*,\s*([-+]?[\d.eE+-]+)\s*\]\s*\Z",
    re.ASCII,
)


def _number(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 2**53 else repr(float(v))


def format_box(box: Box) -> str:
    """A canonical box → its answer string ``"[x1, y1, x2, y2]"`` (exact: ``parse_box`` gives the box back)."""
    return "[" + ", ".join(_number(v) for v in box.as_tuple()) + "]"


def parse_box(text: str | None) -> Box | None:
    """An answer string ``"[x1, y1, x2, y2]"`` → ``Box``; None unless it is 4 finite numbers with x1 < x2, y1 < y2."""
    m = _BOX_TEXT.match(text or "")
    if m is None:
        return None
    try:
        values = [float(g) for g in m.groups()]
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in values) or values[0] >= values[2] or values[1] >= values[3]:
        return None
    return Box(*values)


def answer_box(record: RationaleRecord) -> Box | None:
    """The gold box of a box-answer record (None for other answer types or an unreadable answer)."""
    return parse_box(record.answer) if record.answer_type == BOX else None


__all__ = ["BOX", "answer_box", "format_box", "parse_box"]
