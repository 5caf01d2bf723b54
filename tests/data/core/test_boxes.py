"""Canonical box math: IoU against pycocotools, hand cases, torch = numpy, polars expressions = numpy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask

from virl_data.core import boxes as B
from virl_data.core.types import Box

torch = pytest.importorskip("torch")


def random_boxes(rng: np.random.Generator, n: int, size: float = 100.0) -> np.ndarray:
    """``n`` valid boxes in a ``size`` square; some repeated, nested or touching so that edge cases occur."""
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(0.5, size / 2, (n, 2))
    a = np.hstack([xy, xy + wh])
    if n >= 4:
        a[1] = a[0]  # identical
        a[2] = [a[0, 0] + 0.1, a[0, 1] + 0.1, a[0, 2] - 0.1, a[0, 3] - 0.1]  # nested
        a[3] = [a[0, 2], a[0, 1], a[0, 2] + 5, a[0, 3]]  # touching on an edge: IoU 0
    return a


def xywh(a: np.ndarray) -> np.ndarray:
    """Written out here (not via boxconv) so a boxconv bug cannot hide a boxes bug."""
    return np.column_stack([a[:, 0], a[:, 1], a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]])


# --- IoU against pycocotools -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_matrix_matches_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, 40), random_boxes(rng, 30)
    b[:5] = a[:5]
    expected = coco_mask.iou(xywh(a), xywh(b), [0] * len(b))
    got = B.iou_matrix(a, b)
    assert got.shape == (40, 30)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert (got > 0).sum() > 20 and np.isclose(got, 1.0).sum() >= 5  # the sample really has overlaps


XYWH = st.tuples(st.floats(0, 1000), st.floats(0, 1000), st.floats(0.01, 500), st.floats(0.01, 500))


@settings(max_examples=100, deadline=None)
@given(st.lists(XYWH, min_size=1, max_size=6), st.lists(XYWH, min_size=1, max_size=6))
def test_iou_matrix_matches_pycocotools_property(a_xywh: list, b_xywh: list) -> None:
    a_wh, b_wh = np.array(a_xywh, dtype=np.float64), np.array(b_xywh, dtype=np.float64)
    a = np.column_stack([a_wh[:, :2], a_wh[:, :2] + a_wh[:, 2:]])
    b = np.column_stack([b_wh[:, :2], b_wh[:, :2] + b_wh[:, 2:]])
    expected = coco_mask.iou(xywh(a), xywh(b), [0] * len(b))
    np.testing.assert_allclose(B.iou_matrix(a, b), expected, rtol=1e-9, atol=1e-12)


def test_precision_and_coverage_match_pycocotools_crowd_overlap() -> None:
    # With iscrowd=1 pycocotools divides the intersection by the area of the detection (its first argument).
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 12), random_boxes(rng, 9)
    precision = coco_mask.iou(xywh(a), xywh(b), [1] * 9)
    np.testing.assert_allclose(B.overlap_matrix(a, b, "precision"), precision, atol=1e-12)
    np.testing.assert_allclose(
        B.overlap_matrix(a, b, "coverage"), coco_mask.iou(xywh(b), xywh(a), [1] * 12).T, atol=1e-12
    )
    with pytest.raises(ValueError, match="unknown overlap kind 'dice'"):
        B.overlap_matrix(a, b, "dice")


def test_pairwise_iou_is_the_diagonal() -> None:
    rng = np.random.default_rng(4)
    a, b = random_boxes(rng, 25), random_boxes(rng, 25)
    np.testing.assert_allclose(B.iou(a, b), np.diag(B.iou_matrix(a, b)), rtol=1e-12)


# --- hand cases ------------------------------------------------------------------------------------------------------
def test_iou_hand_cases() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 9], [0, 0, 0, 0]], float)
    b = np.array([[5, 0, 15, 10], [2, 2, 4, 4], [10, 0, 20, 10], [5, 5, 5, 9], [0, 0, 0, 0]], float)
    # 50/150; a contains b: 4/100; touching: 0; two degenerate boxes (union 0): 0, not NaN.
    np.testing.assert_allclose(B.iou(a, b), [1 / 3, 0.04, 0.0, 0.0, 0.0])
    assert B.intersection_matrix(a[:1], b[:2]).tolist() == [[50.0, 4.0]]


def test_area_hand_cases() -> None:
    a = np.array([[0, 0, 4, 2], [3, 3, 1, 5], [1, 1, 1, 9], [-2, -2, 2, 2]], float)
    assert B.area(a).tolist() == [8.0, 0.0, 0.0, 16.0]  # inverted and degenerate boxes have area 0
    assert float(B.area(np.array([0, 0, 4, 2.0]))) == 8.0


def test_clip_hand_cases() -> None:
    a = np.array([[-5, -5, 50, 50], [10, 10, 20, 20], [120, 90, 130, 95]], float)
    assert B.clip(a, 100, 80).tolist() == [[0, 0, 50, 50], [10, 10, 20, 20], [100, 80, 100, 80]]
    assert B.clip(np.array([-1, 2, 300, 4.0]), 100, 50).tolist() == [0, 2, 100, 4]
    per_box = B.clip(np.array([[-1, -1, 50, 50]] * 2, float), np.array([10, 20]), np.array([30, 40]))
    assert per_box.tolist() == [[0, 0, 10, 30], [0, 0, 20, 40]]


def test_union_contains_is_valid_hand_cases() -> None:
    a = np.array([[10, 20, 30, 40], [5, 25, 15, 60], [12, 0, 28, 35]], float)
    assert B.union(a).tolist() == [5, 0, 30, 60]
    with pytest.raises(ValueError, match="union of no boxes"):
        B.union(np.empty((0, 4)))
    outer = np.array([[0, 0, 10, 10]] * 4, float)
    inner = np.array([[0, 0, 10, 10], [2, 2, 8, 8], [-1, 2, 8, 8], [2, 2, 8, 10.5]], float)
    assert B.contains(outer, inner).tolist() == [True, True, False, False]
    assert B.contains(outer, inner, tol=1.0).tolist() == [True, True, True, True]
    odd = np.array([[0, 0, 1, 1], [1, 0, 1, 1], [2, 0, 1, 1], [0, np.nan, 1, 1], [0, 0, np.inf, 1]], float)
    assert B.is_valid(odd).tolist() == [True, False, False, False, False]


def test_box_objects_round_trip_through_arrays() -> None:
    boxes = [Box(0, 0, 4, 2), Box(1.5, 2.5, 3.5, 4.5)]
    arr = B.as_array(boxes)
    assert arr.dtype == np.float64 and arr.shape == (2, 4)
    assert B.to_boxes(arr) == boxes
    assert B.as_array([]).shape == (0, 4)
    assert B.as_array([[1, 2, 3, 4]]).dtype == np.float64


# --- torch gives the numpy results -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_matches_numpy(dtype: str) -> None:
    rng = np.random.default_rng(5)
    a, b = random_boxes(rng, 20), random_boxes(rng, 20)
    a[-1] = b[-1] = [3, 3, 3, 3]  # zero union
    a[-2] = [60, 60, 40, 40]  # inverted
    ta, tb = (torch.from_numpy(x).to(getattr(torch, dtype)) for x in (a, b))
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}

    def same(t_out: object, np_out: np.ndarray) -> None:
        assert isinstance(t_out, torch.Tensor)
        np.testing.assert_allclose(t_out.double().numpy(), np_out, **tol)

    same(B.area(ta), B.area(a))
    same(B.iou(ta, tb), B.iou(a, b))
    for kind in ("iou", "coverage", "precision"):
        same(B.overlap_matrix(ta, tb, kind), B.overlap_matrix(a, b, kind))
    same(B.clip(ta, 70.0, 55.0), B.clip(a, 70.0, 55.0))
    same(B.clip(ta, torch.full((20,), 70.0), torch.full((20,), 55.0)), B.clip(a, 70.0, 55.0))
    same(B.union(ta), B.union(a))
    assert B.contains(ta, tb, tol=2.0).tolist() == B.contains(a, b, tol=2.0).tolist()
    assert B.is_valid(ta).tolist() == B.is_valid(a).tolist()
    assert B.as_array(ta).dtype == np.float64


def test_torch_iou_has_finite_gradients_float64() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [3.0, 3.0, 3.0, 3.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [3.0, 3.0, 3.0, 3.0]], dtype=torch.float64)
    B.iou(a, b).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad[0].abs().sum() > 0


def test_torch_iou_has_finite_gradients_float32_zero_union() -> None:
    a = torch.tensor([[3.0, 3.0, 3.0, 3.0]], requires_grad=True)
    B.iou(a, torch.tensor([[3.0, 3.0, 3.0, 3.0]])).sum().backward()
    assert torch.isfinite(a.grad).all()


def test_polars_iou_of_nan_box_is_zero_like_numpy() -> None:
    nan_box = {"x1": float("nan"), "y1": 0.0, "x2": 1.0, "y2": 1.0}
    df = pl.DataFrame({"a": [nan_box], "b": [{"x1": 0.0, "y1": 0.0, "x2": 1.0, "y2": 1.0}]})
    got = df.select(B.iou_expr(pl.col("a"), pl.col("b"))).item()
    assert got == 0.0 == float(B.iou(np.array([[np.nan, 0, 1, 1]]), np.array([[0.0, 0, 1, 1]]))[0])
    null_box = pl.DataFrame({"a": [None, nan_box]}, schema={"a": pl.Struct({k: pl.Float64 for k in "x1 y1 x2 y2".split()})})
    assert null_box.select(B.valid_expr(pl.col("a"))).to_series().to_list() == [False, False]


# --- polars expressions give the numpy results -----------------------------------------------------------------------
def _frame(a: np.ndarray, b: np.ndarray, w: np.ndarray, h: np.ndarray) -> pl.DataFrame:
    fields = ["x1", "y1", "x2", "y2"]
    return pl.DataFrame({"a": a, "b": b, "w": w, "h": h}).with_columns(
        pl.col("a").arr.to_struct(fields=fields), pl.col("b").arr.to_struct(fields=fields)
    )


def _struct_to_array(s: pl.Series) -> np.ndarray:
    return s.struct.unnest().select("x1", "y1", "x2", "y2").to_numpy()


def test_polars_expressions_match_numpy() -> None:
    rng = np.random.default_rng(6)
    n = 300
    a = rng.uniform(-20, 120, (n, 4))  # inverted, degenerate and out-of-image boxes included
    b = random_boxes(rng, n)
    a[:10], a[10] = b[:10], [5, 5, 5, 9]  # identical pairs and a degenerate one
    b[10] = [5, 5, 5, 9]
    w, h = rng.integers(50, 110, n), rng.integers(50, 110, n)
    df = _frame(a, b, w, h).select(
        iou=B.iou_expr(pl.col("a"), pl.col("b")),
        area=B.area_expr(pl.col("a")),
        clip=B.clip_expr(pl.col("a"), pl.col("w"), pl.col("h")),
        outside=B.outside_expr(pl.col("a"), pl.col("w"), pl.col("h")),
        valid=B.valid_expr(pl.col("a")),
    )
    np.testing.assert_allclose(df["iou"].to_numpy(), B.iou(a, b), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(df["area"].to_numpy(), B.area(a), rtol=1e-12)
    np.testing.assert_allclose(_struct_to_array(df["clip"]), B.clip(a, w, h))
    worst = np.max(np.column_stack([-a[:, 0], -a[:, 1], a[:, 2] - w, a[:, 3] - h, np.zeros(n)]), axis=1)
    np.testing.assert_allclose(df["outside"].to_numpy(), worst)
    assert df["valid"].to_list() == B.is_valid(a).tolist()
    assert 0 < int(df["valid"].sum()) < n and (df["outside"] > 0).any() and (df["iou"] == 1.0).sum() >= 10


def test_valid_expr_rejects_non_finite_like_is_valid() -> None:
    a = np.array([[0, 0, 1, 1], [np.nan, 0, 1, 1], [0, 0, np.inf, 1], [0, -np.inf, 1, 1], [1, 0, 1, 1]], float)
    df = _frame(a, a, np.full(5, 10), np.full(5, 10)).select(valid=B.valid_expr(pl.col("a")))
    assert df["valid"].to_list() == B.is_valid(a).tolist() == [True, False, False, False, False]


def test_union_list_expr_matches_numpy_union() -> None:
    rows = [[(0.0, 5.0, 10.0, 12.0), (3.0, 1.0, 20.0, 8.0)], [(4.0, 4.0, 6.0, 9.0)], []]
    as_structs = [[dict(zip(("x1", "y1", "x2", "y2"), b)) for b in r] for r in rows]
    df = pl.DataFrame({"boxes": as_structs}, schema={"boxes": pl.List(pl.Struct({k: pl.Float64 for k in ("x1", "y1", "x2", "y2")}))})
    got = df.select(B.union_list_expr(pl.col("boxes")).alias("u"))["u"].to_list()
    for row, union in zip(rows[:2], got[:2]):
        assert tuple(union.values()) == tuple(B.union(np.array(row)))
    assert got[2] == {"x1": None, "y1": None, "x2": None, "y2": None}
