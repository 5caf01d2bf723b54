"""Small pieces every miner shares: the rejection outcome of a mined record, argument checks, image sizes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from virl_data.core.errors import ConfigError
from virl_data.core.types import CheckResult, ImageRef, Status


def mining_outcome(reasons: Iterable[str]) -> dict[str, Any]:
    """``checks`` and ``status`` for a mined record: one failed ``mining`` check per reason, REJECTED when any.

    >>> mining_outcome(["unknown_object: 7"])["status"]
    <Status.REJECTED: 'rejected'>
    >>> mining_outcome([])
    {'checks': (), 'status': <Status.MINED: 'mined'>}
    """
    checks = tuple(CheckResult(name="mining", passed=False, reason=r) for r in reasons)
    return {"checks": checks, "status": Status.REJECTED if checks else Status.MINED}


def check_limit(limit: int | None) -> None:
    """A miner's ``limit`` is None (no cap) or a count ≥ 0."""
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")


MAX_IMAGE_SIDE = 1 << 20
"""The largest image side a miner takes from an annotation, px (1,048,576: past any real image, and far inside the
corpus's 32-bit width/height columns)."""


def image_side(v: Any) -> int | None:
    """An annotation's width or height as pixels: a whole number in ``1..MAX_IMAGE_SIDE`` (an int, or a float with
    no fraction), else None (absent, a string, zero, negative, fractional, non-finite or absurdly large).

    >>> image_side(640), image_side(640.0), image_side(0), image_side(1e30), image_side(float("nan")), image_side(True)
    (640, 640, None, None, None, None)
    """
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
        return None
    return int(v) if 0 < v <= MAX_IMAGE_SIDE else None


def size_out_of_range(width: Any, height: Any) -> str | None:
    """The ``mining`` rejection reason for a recorded size no image can have: a number that is not finite or is
    over ``MAX_IMAGE_SIDE``; None otherwise (including absent sizes, which the miner looks up elsewhere).

    >>> size_out_of_range(10**30, 480)
    'image_size_out_of_range: recorded width 1e+30 (a side must be 1..1048576 px)'
    >>> size_out_of_range(640, 480) is None
    True
    """
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (
                (isinstance(v, float) and not math.isfinite(v)) or v > MAX_IMAGE_SIDE):
            shown = f"{float(v):g}" if isinstance(v, float) or v > 10**15 else str(v)
            return f"image_size_out_of_range: recorded {name} {shown} (a side must be 1..{MAX_IMAGE_SIDE} px)"
    return None


def size_from_files(images: Path, candidates: Iterable[str]) -> tuple[ImageRef, str | None] | None:
    """Read an image's size from the first candidate path (relative to ``images``) that is a file.

    Returns ``(ImageRef(relative path, width, height), None)``, or ``(ImageRef(relative path, 0, 0),
    "image_size_unknown: <path>: <error>")`` when the file cannot be opened, or None when no candidate exists (the
    caller names what it looked for). Only the image header is read (PIL opens lazily).
    """
    for name in dict.fromkeys(candidates):
        file = Path(images) / name
        if file.is_file():
            rel = file.relative_to(images).as_posix()
            try:
                with Image.open(file) as im:
                    return ImageRef(rel, im.width, im.height), None
            except OSError as e:
                return ImageRef(rel, 0, 0), f"image_size_unknown: {rel}: {e}"
    return None
