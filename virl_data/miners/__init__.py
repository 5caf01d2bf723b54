"""Miners: one module per source, each turning that source's files into ``RationaleRecord``s.

The interface every miner exposes (and the only thing the CLI and pipelines call)::

    mine(src_dir: str | Path, *, limit: int | None = None) -> Iterator[RationaleRecord]

- ``src_dir`` is the source's folder as downloaded (for the synthetic ``shapes`` world: the image root to render
  the scenes into);
- ``limit`` caps the number of records yielded (``None`` = all; ``shapes`` has no end and defaults to 200);
- records come out with ``status=MINED``, no checks, ``provenance.miner = "<name>@<version>"``, boxes in the
  canonical convention (absolute-pixel ``x1, y1, x2, y2`` on the original image, converted by ``virl_data.boxconv``),
  image paths relative to the image root, and a stable ``id`` from ``types.record_id(source, *native_ids)``;
- a miner streams (it is a generator over the source) and never writes the corpus itself: ``corpus.write`` does.

``MINERS`` maps a source name to its ``mine`` function; add a source by adding its module and one entry here.

Example:
    >>> from virl_data.miners import MINERS
    >>> recs = list(MINERS["shapes"](None, limit=3))
    >>> len(recs), recs[0].provenance.source
    (3, 'shapes')
"""

from __future__ import annotations

from collections.abc import Callable

from virl_data.miners import shapes

MINERS: dict[str, Callable] = {"shapes": shapes.mine}
"""Source name → ``mine(src_dir, *, limit=None)``."""

__all__ = ["MINERS"]
