"""Before / after a review: two eval reports of runs trained with the same config and seed, side by side.

The loop: train on a corpus's split, evaluate, queue and review the disagreements (``virl-data queue``), export the
reviewed corpus, retrain with the SAME config and seed on it, evaluate again. ``compare_reports`` reads the two
``eval.json`` files (``virl-train eval``) and lines up accuracy, rationale IoU and the illusion probe:

- ``accuracy``: answer accuracy; ``rationale``: R_rat = ½(recall + precision) of the crops vs the chain under the
  run's overlap (IoU by default), with ``rationale_recall`` / ``rationale_precision``; ``hit_rate@0.5``: crops with
  IoU ≥ 0.5 to a chain step;
- ``probe_accuracy``: accuracy when every crop is replaced by a random one of the same size, ``probe_drop`` =
  accuracy − probe accuracy (how much the answers depend on where the policy looked).

"Same config" is checked: the two resolved configs must agree on every key except where the data, the outputs and
the checkpoint are (``IGNORED``); a difference is a ``CompareError`` naming the keys (``allow_config_diff`` to
compare anyway, the differences listed). Note the evaluation split itself differs when the review changed it: the
numbers compare the policies each on its own corpus's split, as the loop produces them.

Example:
    >>> a = {"metrics": {"accuracy": 0.5, "rationale": 0.25}, "probe": {"accuracy": 0.25}, "probe_drop": 0.25,
    ...      "config": {"train": {"run": {"seed": 0, "out_dir": "a"}}}}
    >>> b = {"metrics": {"accuracy": 0.75, "rationale": 0.5}, "probe": {"accuracy": 0.25}, "probe_drop": 0.5,
    ...      "config": {"train": {"run": {"seed": 0, "out_dir": "b"}}}}
    >>> [(r.metric, r.delta) for r in compare_reports(a, b).rows][:2]
    [('accuracy', 0.25), ('rationale', 0.25)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from virl_data.core.errors import CorpusReadError, VirlError

METRICS = ("accuracy", "rationale", "rationale_recall", "rationale_precision", "hit_rate@0.5")
IGNORED = ("train.data.path", "train.run.out_dir", "train.model.name_or_path")


class CompareError(VirlError):
    """Two reports that cannot be compared: unreadable, or trained / evaluated with different configs."""


@dataclass(frozen=True)
class Row:
    """One metric before and after, and after − before (None where a report lacks it)."""

    metric: str
    before: float | None
    after: float | None

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before


@dataclass
class Comparison:
    """The rows and the config keys that differ (empty when the configs agree)."""

    rows: list[Row]
    differences: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [{"metric": r.metric, "before": r.before, "after": r.after, "delta": r.delta}
                         for r in self.rows], "config_differences": self.differences}  # fmt: skip


def load_report(path: str | Path) -> dict[str, Any]:
    """An ``eval.json`` (or the eval folder holding one)."""
    path = Path(path)
    path = path / "eval.json" if path.is_dir() else path
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise CorpusReadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise CompareError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise CompareError(f"{path}: not an eval report (no 'metrics'); virl-train eval writes one")
    return data


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: obj}


def config_differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between the two reports' configs, ``IGNORED`` left out."""
    a, b = _flatten(before.get("config") or {}), _flatten(after.get("config") or {})
    return sorted(k for k in a.keys() | b.keys() if k not in IGNORED and a.get(k) != b.get(k))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def compare_reports(
    before: Mapping[str, Any], after: Mapping[str, Any], *, allow_config_diff: bool = False
) -> Comparison:
    """Line up ``METRICS``, the probe accuracy and drop, and the episode counts of two eval reports."""
    differences = config_differences(before, after)
    if differences and not allow_config_diff:
        shown = ", ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
        raise CompareError(f"the two runs differ in config ({shown}); retrain with the same config and seed, or "
                           f"pass --allow-config-diff")
    rows = [Row(m, _number(before["metrics"].get(m)), _number(after["metrics"].get(m))) for m in METRICS]
    probe = [(r.get("probe") or {}).get("accuracy") for r in (before, after)]
    rows.append(Row("probe_accuracy", _number(probe[0]), _number(probe[1])))
    rows.append(Row("probe_drop", _number(before.get("probe_drop")), _number(after.get("probe_drop"))))
    counts = [(r.get("counts") or {}).get("n_episodes") for r in (before, after)]
    rows.append(Row("n_episodes", _number(counts[0]), _number(counts[1])))
    return Comparison(rows, differences)


def render(comparison: Comparison, title: str = "before / after the review") -> Any:
    """A rich ``Table``: metric, before, after, Δ."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("metric", "before", "after", "Δ"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for r in comparison.rows:
        delta = "" if r.delta is None else f"{r.delta:+.3f}"
        table.add_row(r.metric, fmt(r.before), fmt(r.after), delta)
    return table


__all__ = ["IGNORED", "METRICS", "CompareError", "Comparison", "Row", "compare_reports", "config_differences",
           "load_report", "render"]
