"""Small pieces every miner shares: the rejection outcome of a mined record and argument checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from virl_data.errors import ConfigError
from virl_data.types import CheckResult, Status


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
