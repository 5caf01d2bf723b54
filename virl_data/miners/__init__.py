"""Miners: one module per source, each turning that source's own files into ``RationaleRecord``s.

Every miner is a generator function ``mine(*, <the source's files as keyword paths>, images=None, limit=None)
-> Iterator[RationaleRecord]`` (the synthetic ``shapes`` world takes ``mine(image_dir, *, limit, seed)``):

- records come out with ``status=MINED``, or ``REJECTED`` with a ``mining`` check naming the reason (unknown object
  ids, ambiguous referents, unknown image size...), so counts in = counts out;
- boxes are canonical (absolute-pixel ``x1, y1, x2, y2`` on the original image, converted by
  ``virl_data.core.boxconv``), image paths are relative to the image root, ids come from ``types.record_id(source, *native_ids)``,
  ``provenance.miner`` is ``"<name>@<version>"``;
- a miner streams and never writes the corpus itself: ``corpus.write`` does. Unreadable files raise
  ``CorpusReadError`` naming the file.

``MINERS`` maps a source name to its ``mine`` function; ``virl-data mine SOURCE`` exposes each with its own options.

Example:
    >>> from virl_data.miners import MINERS
    >>> recs = list(MINERS["shapes"](None, limit=3))
    >>> len(recs), recs[0].provenance.source
    (3, 'shapes')
"""

from __future__ import annotations

from collections.abc import Callable

from virl_data.miners import (
    coco,
    flickr30k,
    gqa,
    refcoco,
    shapes,
    treebench,
    vg,
    viscot,
)

MINERS: dict[str, Callable] = {
    "shapes": shapes.mine,
    "gqa": gqa.mine,
    "vg": vg.mine,
    "coco": coco.mine,
    "refcoco": refcoco.mine,
    "flickr30k": flickr30k.mine,
    "viscot": viscot.mine,
    "treebench": treebench.mine,
}
"""Source name → ``mine(src_dir, *, limit=None)``."""

__all__ = ["MINERS"]
