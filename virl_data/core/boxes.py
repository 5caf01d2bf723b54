"""Canonical-box math, vectorised. Canonical = absolute-pixel ``x1, y1, x2, y2`` on the original image (float64).

Three front ends over the same formulas:

- numpy arrays ``(N, 4)`` (and torch tensors ``(N, 4)``: every array function dispatches on the input type);
- ``Box`` dataclasses through ``as_array`` / ``to_boxes``;
- polars expressions over struct columns ``{x1, y1, x2, y2}`` (``area_expr``, ``iou_expr``, ``clip_expr``...), used
  by the checks and curation so they stay column-wise.

Formulas: ``area = max(x2-x1, 0) * max(y2-y1, 0)``; ``inter(a, b) = area(max(a.x1,b.x1), max(a.y1,b.y1),
min(a.x2,b.x2), min(a.y2,b.y2))``; ``iou = inter / (area(a) + area(b) - inter)`` with ``iou = 0`` where the union
is 0; ``coverage(a, b) = inter / area(b)`` (how much of b the box a covers); ``precision(a, b) = inter / area(a)``.

Example:
    >>> import numpy as np
    >>> a = np.array([[0, 0, 10, 10]], float); b = np.array([[5, 0, 15, 10]], float)
    >>> float(iou_matrix(a, b)[0, 0])
    0.3333333333333333
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from virl_data.core.types import Box

Array = Any  # np.ndarray | torch.Tensor, shape (..., 4)


def _is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def _maximum(a: Array, b: Array) -> Array:
    return a.maximum(b) if _is_torch(a) else np.maximum(a, b)


def _minimum(a: Array, b: Array) -> Array:
    return a.minimum(b) if _is_torch(a) else np.minimum(a, b)


def _clamp_min0(a: Array) -> Array:
    return a.clamp(min=0) if _is_torch(a) else np.clip(a, 0, None)


def _safe_div(num: Array, den: Array) -> Array:
    if _is_torch(num):
        import torch

        # Divide by 1 where the denominator is 0 so gradients stay finite in every dtype.
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


# --- conversions between Box and arrays ------------------------------------------------------------------------------
def as_array(boxes: Sequence[Box] | Array) -> np.ndarray:
    """``Box`` objects (or an array-like) → a float64 ``(N, 4)`` array."""
    if isinstance(boxes, np.ndarray):
        return boxes.astype(np.float64, copy=False).reshape(-1, 4)
    if len(boxes) and isinstance(boxes[0], Box):
        return np.array([b.as_tuple() for b in boxes], dtype=np.float64).reshape(-1, 4)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def to_boxes(arr: Array) -> list[Box]:
    """A ``(N, 4)`` array → ``Box`` objects."""
    rows = arr.tolist() if hasattr(arr, "tolist") else list(arr)
    return [Box(*row) for row in np.asarray(rows, dtype=np.float64).reshape(-1, 4).tolist()]


# --- array math ------------------------------------------------------------------------------------------------------
def area(a: Array) -> Array:
    """Area of each box, ``(...,)``; 0 for inverted or degenerate boxes."""
    return _clamp_min0(a[..., 2] - a[..., 0]) * _clamp_min0(a[..., 3] - a[..., 1])


def intersection_matrix(a: Array, b: Array) -> Array:
    """``(N, M)`` intersection areas of every box of ``a`` with every box of ``b``."""
    lt_x = _maximum(a[:, None, 0], b[None, :, 0])
    lt_y = _maximum(a[:, None, 1], b[None, :, 1])
    rb_x = _minimum(a[:, None, 2], b[None, :, 2])
    rb_y = _minimum(a[:, None, 3], b[None, :, 3])
    return _clamp_min0(rb_x - lt_x) * _clamp_min0(rb_y - lt_y)


def overlap_matrix(a: Array, b: Array, kind: str = "iou") -> Array:
    """``(N, M)`` overlap of each box of ``a`` with each box of ``b``.

    ``kind``: ``"iou"`` (inter/union), ``"coverage"`` (inter/area(b): how much of b is covered),
    ``"precision"`` (inter/area(a): how much of a is on b).
    """
    inter = intersection_matrix(a, b)
    if kind == "iou":
        den = area(a)[:, None] + area(b)[None, :] - inter
    elif kind == "coverage":
        den = area(b)[None, :] + 0 * inter
    elif kind == "precision":
        den = area(a)[:, None] + 0 * inter
    else:
        raise ValueError(f"unknown overlap kind {kind!r}; use 'iou', 'coverage' or 'precision'")
    return _safe_div(inter, den)


def iou_matrix(a: Array, b: Array) -> Array:
    """``(N, M)`` IoU of every box of ``a`` with every box of ``b``."""
    return overlap_matrix(a, b, "iou")


def iou(a: Array, b: Array) -> Array:
    """Element-wise IoU of paired boxes, ``(N,)``."""
    lt_x, lt_y = _maximum(a[..., 0], b[..., 0]), _maximum(a[..., 1], b[..., 1])
    rb_x, rb_y = _minimum(a[..., 2], b[..., 2]), _minimum(a[..., 3], b[..., 3])
    inter = _clamp_min0(rb_x - lt_x) * _clamp_min0(rb_y - lt_y)
    return _safe_div(inter, area(a) + area(b) - inter)


def clip(a: Array, width: float | Array, height: float | Array) -> Array:
    """Clip boxes to the image ``[0, width] x [0, height]``."""
    if _is_torch(a):
        import torch

        w = torch.as_tensor(width, dtype=a.dtype, device=a.device)
        h = torch.as_tensor(height, dtype=a.dtype, device=a.device)
        zero = torch.zeros((), dtype=a.dtype, device=a.device)
        return torch.stack(
            [a[..., 0].clamp(zero, w), a[..., 1].clamp(zero, h), a[..., 2].clamp(zero, w), a[..., 3].clamp(zero, h)],
            dim=-1,
        )
    w, h = np.asarray(width, dtype=np.float64), np.asarray(height, dtype=np.float64)
    return np.stack(
        [np.clip(a[..., 0], 0, w), np.clip(a[..., 1], 0, h), np.clip(a[..., 2], 0, w), np.clip(a[..., 3], 0, h)],
        axis=-1,
    )


def union(a: Array) -> Array:
    """The smallest box enclosing all boxes of ``a`` (``(N, 4)`` → ``(4,)``); ``a`` must be non-empty."""
    if len(a) == 0:
        raise ValueError("union of no boxes")
    if _is_torch(a):
        import torch

        return torch.stack([a[:, 0].min(), a[:, 1].min(), a[:, 2].max(), a[:, 3].max()])
    return np.array([a[:, 0].min(), a[:, 1].min(), a[:, 2].max(), a[:, 3].max()], dtype=np.float64)


def contains(outer: Array, inner: Array, tol: float = 0.0) -> Array:
    """Element-wise: does ``outer`` contain ``inner`` (within ``tol`` pixels on every side)?"""
    return (
        (inner[..., 0] >= outer[..., 0] - tol)
        & (inner[..., 1] >= outer[..., 1] - tol)
        & (inner[..., 2] <= outer[..., 2] + tol)
        & (inner[..., 3] <= outer[..., 3] + tol)
    )


def is_valid(a: Array) -> Array:
    """Element-wise: finite coordinates with ``x1 < x2`` and ``y1 < y2``."""
    if _is_torch(a):
        finite = a.isfinite().all(dim=-1)
    else:
        finite = np.isfinite(a).all(axis=-1)
    return finite & (a[..., 0] < a[..., 2]) & (a[..., 1] < a[..., 3])


# --- polars expressions over {x1, y1, x2, y2} struct columns --------------------------------------------------------
def _f(box: pl.Expr, name: str) -> pl.Expr:
    return box.struct.field(name)


def area_expr(box: pl.Expr) -> pl.Expr:
    """Area of a box struct column (0 for inverted boxes)."""
    w = (_f(box, "x2") - _f(box, "x1")).clip(lower_bound=0)
    h = (_f(box, "y2") - _f(box, "y1")).clip(lower_bound=0)
    return w * h


def intersection_expr(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    w = (pl.min_horizontal(_f(a, "x2"), _f(b, "x2")) - pl.max_horizontal(_f(a, "x1"), _f(b, "x1"))).clip(
        lower_bound=0
    )
    h = (pl.min_horizontal(_f(a, "y2"), _f(b, "y2")) - pl.max_horizontal(_f(a, "y1"), _f(b, "y1"))).clip(
        lower_bound=0
    )
    return w * h


def iou_expr(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """IoU of two box struct columns, row-wise (0 where the union is 0)."""
    inter = intersection_expr(a, b)
    union_area = area_expr(a) + area_expr(b) - inter
    # NaN > 0 is true in polars: treat a NaN union like an empty one, as the numpy path does.
    return pl.when((union_area > 0) & union_area.is_not_nan()).then(inter / union_area).otherwise(0.0)


def clip_expr(box: pl.Expr, width: pl.Expr, height: pl.Expr) -> pl.Expr:
    """Clip a box struct column to ``[0, width] x [0, height]``; returns a struct with the same field names."""
    return pl.struct(
        _f(box, "x1").clip(0, width).alias("x1"),
        _f(box, "y1").clip(0, height).alias("y1"),
        _f(box, "x2").clip(0, width).alias("x2"),
        _f(box, "y2").clip(0, height).alias("y2"),
    )


def outside_expr(box: pl.Expr, width: pl.Expr, height: pl.Expr) -> pl.Expr:
    """How far (pixels, ≥ 0) a box sticks out of the image on its worst side."""
    return pl.max_horizontal(
        -_f(box, "x1"), -_f(box, "y1"), _f(box, "x2") - width, _f(box, "y2") - height, pl.lit(0.0)
    )


def union_list_expr(boxes: pl.Expr) -> pl.Expr:
    """The smallest box around a ``List(Struct{x1, y1, x2, y2})`` column, row-wise (fields null for an empty list)."""

    def corner(name: str) -> pl.Expr:
        return boxes.list.eval(pl.element().struct.field(name))

    return pl.struct(
        corner("x1").list.min().alias("x1"),
        corner("y1").list.min().alias("y1"),
        corner("x2").list.max().alias("x2"),
        corner("y2").list.max().alias("y2"),
    )


def valid_expr(box: pl.Expr) -> pl.Expr:
    """Finite coordinates with ``x1 < x2`` and ``y1 < y2``."""
    fields = [_f(box, n) for n in ("x1", "y1", "x2", "y2")]
    finite = pl.all_horizontal([f.is_finite() for f in fields])
    return (finite & (fields[0] < fields[2]) & (fields[1] < fields[3])).fill_null(False).alias("valid")
