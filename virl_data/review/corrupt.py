"""Deliberately corrupted chains: a known set of wrong records to measure a review queue against.

``corrupt_chains`` picks ``fraction`` of the records (seeded) and breaks each one's chain in one of two ways:

- ``shifted_box``: one box of one step is moved by its own size plus ``gap`` pixels (right/left/down/up, the first
  direction that keeps it inside the image), so it no longer overlaps where it was (IoU 0);
- ``missing_step``: one step of a chain of two or more steps is dropped (a one-step chain is shifted instead).

The records keep their ids; only ``chain`` changes (as if the miner had got it wrong). The originals are returned
too, so a scripted reviewer can put them back.

Example:
    >>> from virl_data.miners.shapes import ShapesConfig, generate
    >>> recs = list(generate(40, seed=0, config=ShapesConfig(image_size=(128, 128))))
    >>> bad, kinds = corrupt_chains(recs, fraction=0.05, seed=0)
    >>> len(kinds), sum(a.chain != b.chain for a, b in zip(recs, bad))
    (2, 2)
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from virl_data.core.errors import ConfigError
from virl_data.core.types import Box, RationaleRecord

KINDS = ("shifted_box", "missing_step")


def shift_box(box: Box, width: float, height: float, gap: float = 2.0) -> Box | None:
    """``box`` moved by its own width (or height) plus ``gap`` to the right, left, down or up, whichever first stays
    inside the image; None when none does.

    >>> shift_box(Box(0, 0, 10, 10), 100, 100)
    Box(x1=12.0, y1=0.0, x2=22.0, y2=10.0)
    """
    dx, dy = box.w + gap, box.h + gap
    for mx, my in ((dx, 0.0), (-dx, 0.0), (0.0, dy), (0.0, -dy)):
        moved = Box(box.x1 + mx, box.y1 + my, box.x2 + mx, box.y2 + my)
        if moved.x1 >= 0 and moved.y1 >= 0 and moved.x2 <= width and moved.y2 <= height:
            return moved
    return None


def _corrupt(record: RationaleRecord, rng: random.Random, kind: str) -> tuple[RationaleRecord, str] | None:
    chain = list(record.chain)
    if kind == "missing_step" and len(chain) >= 2:
        del chain[rng.randrange(len(chain))]
        return dataclasses.replace(record, chain=tuple(chain)), kind
    j = rng.randrange(len(chain))
    k = rng.randrange(len(chain[j].boxes))
    moved = shift_box(chain[j].boxes[k], record.image.width, record.image.height)
    if moved is None:
        return None
    new_boxes = list(chain[j].boxes)
    new_boxes[k] = moved
    chain[j] = dataclasses.replace(chain[j], boxes=tuple(new_boxes))
    return dataclasses.replace(record, chain=tuple(chain)), "shifted_box"


def corrupt_chains(
    records: Sequence[RationaleRecord], *, fraction: float = 0.05, seed: int = 0
) -> tuple[list[RationaleRecord], dict[str, str]]:
    """Break the chains of ``round(fraction · n)`` records (at least one when ``fraction > 0``); returns all records
    (same order) and ``{record id: "shifted_box" | "missing_step"}`` of the corrupted ones."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"fraction must be in [0, 1], got {fraction}")
    rng = random.Random(f"virl-corrupt:{seed}")
    candidates = [i for i, r in enumerate(records) if r.chain and all(s.boxes for s in r.chain)]
    n = min(len(candidates), max(1, round(fraction * len(records)))) if fraction > 0 else 0
    out, kinds = list(records), {}
    for i in rng.sample(candidates, len(candidates)):
        if len(kinds) == n:
            break
        done = _corrupt(records[i], rng, rng.choice(KINDS))
        if done is not None:
            out[i], kinds[records[i].id] = done
    return out, kinds


__all__ = ["KINDS", "corrupt_chains", "shift_box"]
