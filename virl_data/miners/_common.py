"""Small pieces every miner shares: the rejection outcome of a mined record, argument checks, image sizes."""

from __future__ import annotations

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
