"""Box conventions: round trips (hypothesis), hand-computed cases per convention, smart_resize, and errors."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from virl_data.core import boxconv as bc
from virl_data.core.errors import BoxConventionError, VirlError
from virl_data.core.types import Box

FAST = settings(max_examples=100, deadline=None)


# --- strategies ------------------------------------------------------------------------------------------------------
@st.composite
def image_size(draw: st.DrawFn) -> tuple[int, int]:
    """(width, height) with aspect ratio ≤ 200, as smart_resize requires."""
    w = draw(st.integers(1, 5000))
    h = draw(st.integers(max(1, math.ceil(w / 200)), min(5000, w * 200)))
    return w, h


@st.composite
def boxes_in(draw: st.DrawFn, w: int, h: int) -> np.ndarray:
    """1–8 canonical boxes (degenerate ones included) inside a ``w x h`` image."""
    n = draw(st.integers(1, 8))
    unit = st.floats(0, 1, allow_nan=False)
    u = np.array(draw(st.lists(st.tuples(unit, unit, unit, unit), min_size=n, max_size=n)), dtype=np.float64)
    x = np.sort(u[:, [0, 2]], axis=1) * w
    y = np.sort(u[:, [1, 3]], axis=1) * h
    return np.column_stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]])


@st.composite
def case(draw: st.DrawFn, name: str) -> tuple[np.ndarray, dict]:
    """Boxes plus the parameters convention ``name`` needs, drawn at random."""
    w, h = draw(image_size())
    params: dict = {"width": w, "height": h}
    if name == "qwen3_norm1000":
        params["scale"] = draw(st.sampled_from([1000, 999]))
    elif name == "padded_square_rel":
        params["centered"] = draw(st.booleans())
    elif name == "qwen25_abs_resized" and draw(st.booleans()):
        params["resized"] = (draw(st.integers(1, 3000)), draw(st.integers(1, 3000)))
    return draw(boxes_in(w, h)), params


def _close(a: np.ndarray, b: np.ndarray, scale: float) -> bool:
    return bool(np.allclose(a, b, rtol=1e-9, atol=1e-9 * scale))


# --- round trips -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(bc.CONVENTIONS))
def test_canonical_round_trip_is_identity(name: str) -> None:
    @FAST
    @given(case(name))
    def check(drawn: tuple[np.ndarray, dict]) -> None:
        boxes, params = drawn
        there = bc.from_canonical(name, boxes, **params)
        back = bc.to_canonical(name, there, **params)
        assert there.shape == boxes.shape and back.dtype == np.float64
        assert _close(back, boxes, max(params["width"], params["height"]))

    check()


@pytest.mark.parametrize("name", sorted(bc.CONVENTIONS))
def test_rank_is_kept_and_input_untouched(name: str) -> None:
    one = np.array([10.0, 20.0, 50.0, 70.0])
    kept = one.copy()
    out = bc.to_canonical(name, one, width=200, height=100)
    assert out.shape == (4,) and out.dtype == np.float64
    assert bc.to_canonical(name, [one.tolist()], width=200, height=100).shape == (1, 4)
    assert bc.from_canonical(name, np.empty((0, 4)), width=200, height=100).shape == (0, 4)
    np.testing.assert_array_equal(one, kept)
    out[0] = -1.0  # the result is a new array
    np.testing.assert_array_equal(one, kept)


@pytest.mark.parametrize("name", sorted(bc.CONVENTIONS))
def test_direct_functions_are_the_registered_pair(name: str) -> None:
    to_fn, from_fn = bc.CONVENTIONS[name]
    assert to_fn.__name__ == f"{name}_to_canonical" and from_fn.__name__ == f"canonical_to_{name}"
    assert to_fn.__doc__ and ">>>" in to_fn.__doc__ and from_fn.__doc__ and ">>>" in from_fn.__doc__


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(bc)
    assert result.attempted >= 20 and result.failed == 0


# --- hand-computed cases ---------------------------------------------------------------------------------------------
W, H = 200, 100
CANON = [20.0, 20.0, 100.0, 60.0]
HAND = [
    ("coco_xywh", [20, 20, 80, 40], {}),
    ("fiftyone_rel_xywh", [0.1, 0.2, 0.4, 0.4], {}),
    ("labelstudio_pct", [10, 20, 40, 40], {}),
    ("rel_xyxy", [0.1, 0.2, 0.5, 0.6], {}),
    ("qwen2_norm1000", [100, 200, 500, 600], {}),
    ("qwen3_norm1000", [100, 200, 500, 600], {}),
    ("qwen3_norm1000", [99.9, 199.8, 499.5, 599.4], {"scale": 999}),
    # 200x100 → smart_resize keeps 196x112 (round(200/28)=7, round(100/28)=4); x * 196/200, y * 112/100.
    ("qwen25_abs_resized", [19.6, 22.4, 98.0, 67.2], {}),
    ("qwen25_abs_resized", [10, 10, 50, 30], {"resized": (100, 50)}),
    # square side 200; the 100-px-high image is pasted at y = 50 when centred, at y = 0 otherwise.
    ("padded_square_rel", [0.1, 0.35, 0.5, 0.55], {}),
    ("padded_square_rel", [0.1, 0.1, 0.5, 0.3], {"centered": False}),
]


@pytest.mark.parametrize(("name", "external", "params"), HAND)
def test_hand_computed(name: str, external: list[float], params: dict) -> None:
    np.testing.assert_allclose(bc.to_canonical(name, external, width=W, height=H, **params), CANON, rtol=1e-12)
    np.testing.assert_allclose(
        bc.from_canonical(name, CANON, width=W, height=H, **params), external, rtol=1e-12, atol=1e-12
    )


def test_qwen25_on_a_1000x500_image_uses_1008x504() -> None:
    # round(1000/28) = 36 → 1008, round(500/28) = 18 → 504; 1008*504 = 508032 lies within [3136, 1003520].
    assert bc.smart_resize(500, 1000) == (504, 1008)
    got = bc.canonical_to_qwen25_abs_resized([100, 50, 300, 250], width=1000, height=500)
    np.testing.assert_allclose(got, [100.8, 50.4, 302.4, 252.0], rtol=1e-12)


def test_qwen3_scale_999_maps_the_full_range_to_the_image_edges() -> None:
    full = bc.qwen3_norm1000_to_canonical([0, 0, 999, 999], width=640, height=480, scale=999)
    np.testing.assert_allclose(full, [0, 0, 640, 480])
    default = bc.qwen3_norm1000_to_canonical([0, 0, 999, 999], width=640, height=480)
    np.testing.assert_allclose(default, [0, 0, 639.36, 479.52])


@pytest.mark.parametrize(("w", "h"), [(200, 100), (100, 97), (61, 64), (50, 50)])
def test_padded_square_matches_expand2square_pixels(w: int, h: int) -> None:
    """Paint a box, pad the image as LLaVA's expand2square does, find the box there, and convert it back."""
    img = Image.new("L", (w, h), 0)
    x1, y1, x2, y2 = w // 5, h // 4, w // 5 + max(1, w // 3), h // 4 + max(1, h // 2)
    img.paste(255, (x1, y1, x2, y2))
    side = max(w, h)
    square = Image.new("L", (side, side), 0)
    square.paste(img, ((side - w) // 2, (side - h) // 2))
    found = np.array(square.getbbox(), dtype=np.float64) / side  # getbbox is xyxy, exclusive right/bottom
    np.testing.assert_allclose(bc.padded_square_rel_to_canonical(found, width=w, height=h), [x1, y1, x2, y2])


def test_per_box_image_sizes_match_one_call_per_box() -> None:
    rel = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.75, 1.0]])
    ws, hs = np.array([200, 640, 33]), np.array([100, 480, 77])
    for name in ("rel_xyxy", "fiftyone_rel_xywh", "labelstudio_pct", "qwen2_norm1000", "padded_square_rel"):
        together = bc.to_canonical(name, rel, width=ws, height=hs)
        one_by_one = [bc.to_canonical(name, r, width=w, height=h) for r, w, h in zip(rel, ws, hs, strict=True)]
        np.testing.assert_allclose(together, np.stack(one_by_one), err_msg=name)


def test_out_of_image_and_inverted_values_pass_through_unclipped() -> None:
    got = bc.rel_xyxy_to_canonical([[-0.1, 0.0, 1.2, 1.0], [0.5, 0.5, 0.2, 0.2]], width=200, height=100)
    np.testing.assert_allclose(got, [[-20, 0, 240, 100], [100, 50, 40, 20]])


def test_box_helpers() -> None:
    assert bc.to_box("coco_xywh", [10, 20, 30, 40]) == Box(10, 20, 40, 60)
    assert bc.from_box("labelstudio_pct", Box(20, 20, 100, 60), width=200, height=100) == (10.0, 20.0, 40.0, 40.0)
    assert bc.from_canonical("coco_xywh", [Box(0, 0, 1, 2), Box(1, 1, 3, 3)]).tolist() == [[0, 0, 1, 2], [1, 1, 2, 2]]
    with pytest.raises(BoxConventionError, match="already canonical"):
        bc.to_canonical("coco_xywh", Box(0, 0, 1, 2))
    with pytest.raises(BoxConventionError, match="one box"):
        bc.to_box("coco_xywh", [[10, 20, 30, 40]])
    with pytest.raises(BoxConventionError, match="takes a Box"):
        bc.from_box("coco_xywh", (1, 2, 3, 4))  # type: ignore[arg-type]


def test_labelstudio_value_dicts() -> None:
    value = {"x": 10, "y": 20, "width": 40, "height": 40, "rotation": 0}
    assert bc.labelstudio_value_to_box(value, width=200, height=100) == Box(*CANON)
    assert bc.box_to_labelstudio_value(Box(*CANON), width=200, height=100) == {
        "x": 10.0,
        "y": 20.0,
        "width": 40.0,
        "height": 40.0,
    }
    no_rotation = {k: v for k, v in value.items() if k != "rotation"}
    assert bc.labelstudio_value_to_box(no_rotation, width=200, height=100) == Box(*CANON)
    with pytest.raises(BoxConventionError, match="rotated by 15"):
        bc.labelstudio_value_to_box({**value, "rotation": 15}, width=200, height=100)
    with pytest.raises(BoxConventionError, match="lacks width, height"):
        bc.labelstudio_value_to_box({"x": 1, "y": 2}, width=200, height=100)


# --- smart_resize ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((500, 1000), (504, 1008)),  # rounding only
        ((3000, 4000), (840, 1148)),  # b = sqrt(12e6/1003520) ≈ 3.458: floor(30.98)=30, floor(41.31)=41
        ((1080, 1920), (728, 1316)),  # b ≈ 1.4375: floor(26.83)=26, floor(47.70)=47
        ((10, 20), (56, 84)),  # b = sqrt(3136/200) ≈ 3.960: ceil(1.41)=2, ceil(2.83)=3
        ((560, 280), (560, 280)),  # already multiples of 28 within bounds
        ((42, 70), (56, 56)),  # 42/28 = 1.5 and 70/28 = 2.5 round half to even → 56x56 = 3136 = min_pixels
    ],
)
def test_smart_resize_hand_cases(hw: tuple[int, int], expected: tuple[int, int]) -> None:
    assert bc.smart_resize(*hw) == expected


@FAST
@given(image_size(), st.sampled_from([(56 * 56, 28 * 28 * 1280), (256 * 28 * 28, 512 * 28 * 28)]))
def test_smart_resize_invariants(size: tuple[int, int], bounds: tuple[int, int]) -> None:
    w, h = size
    min_pixels, max_pixels = bounds
    h_r, w_r = bc.smart_resize(h, w, min_pixels=min_pixels, max_pixels=max_pixels)
    assert isinstance(h_r, int) and isinstance(w_r, int)
    assert h_r % 28 == 0 and w_r % 28 == 0 and h_r >= 28 and w_r >= 28
    assert min_pixels <= h_r * w_r <= max_pixels


def test_smart_resize_aspect_ratio_limit() -> None:
    assert bc.smart_resize(1, 200) == (28, 196)  # ratio exactly 200 is allowed; the 1-px side becomes 28
    with pytest.raises(BoxConventionError, match="aspect ratio"):
        bc.smart_resize(1, 201)
    with pytest.raises(BoxConventionError, match="aspect ratio"):
        bc.canonical_to_qwen25_abs_resized([0, 0, 1, 1], width=3, height=1000)
    with pytest.raises(BoxConventionError, match="factor=0"):
        bc.smart_resize(100, 100, factor=0)
    with pytest.raises(BoxConventionError, match="min_pixels=5000, max_pixels=4000"):
        bc.smart_resize(100, 100, min_pixels=5000, max_pixels=4000)


def test_smart_resize_agrees_with_transformers() -> None:
    """Cross-check with transformers' own implementation where the two agree by design (sides > factor/2)."""
    ref = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl").smart_resize
    rng = np.random.default_rng(0)
    for w, h in rng.integers(15, 6000, size=(300, 2)).tolist():
        if max(w, h) / min(w, h) <= 200:
            assert bc.smart_resize(h, w) == ref(h, w), (w, h)


# --- errors ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arr", "message"),
    [
        ([1, 2, 3], r"shape \(4,\) or \(N, 4\), got shape \(3,\)"),
        ([[1, 2, 3, 4, 5]], r"got shape \(1, 5\)"),
        ([[[1, 2, 3, 4]]], r"got shape \(1, 1, 4\)"),
        (["a", "b", "c", "d"], "must be numbers"),
        ([[0, 0, 1, 1], [1, 2, 3]], "must be numbers"),
        ([[0, 0, 1, 1], [0, float("nan"), 1, 1]], "non-finite values; the first is row 1"),
        ([0, 0, float("inf"), 1], "non-finite"),
    ],
)
def test_malformed_boxes(arr: object, message: str) -> None:
    with pytest.raises(BoxConventionError, match=message):
        bc.to_canonical("rel_xyxy", arr, width=10, height=10)


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (0, 10, "width must be finite and > 0, got 0.0"),
        (10, -5, "height must be finite and > 0, got -5.0"),
        (float("nan"), 10, "width must be finite"),
        ([10, 0], 10, "width must be finite and > 0, got 0.0"),
        ([10, 20, 30], 10, r"one value per box \(2\)"),
        ("wide", 10, "must be a number"),
    ],
)
def test_bad_image_sizes(width: object, height: object, message: str) -> None:
    with pytest.raises(BoxConventionError, match=message):
        bc.rel_xyxy_to_canonical([[0, 0, 1, 1], [0, 0, 1, 1]], width=width, height=height)


def test_dispatch_errors_name_the_problem() -> None:
    with pytest.raises(BoxConventionError, match="unknown box convention 'yolo'; known: coco_xywh, fiftyone_rel_xywh"):
        bc.to_canonical("yolo", [0, 0, 1, 1])
    with pytest.raises(BoxConventionError, match="'rel_xyxy' needs width and height"):
        bc.to_canonical("rel_xyxy", [0, 0, 1, 1])
    with pytest.raises(BoxConventionError, match="needs height"):
        bc.from_canonical("qwen2_norm1000", [0, 0, 1, 1], width=10)
    with pytest.raises(BoxConventionError, match="takes centered, height, width; got unexpected scale"):
        bc.to_canonical("padded_square_rel", [0, 0, 1, 1], width=10, height=10, scale=999)
    with pytest.raises(BoxConventionError, match="'coco_xywh' takes no parameters; got unexpected scale"):
        bc.to_canonical("coco_xywh", [0, 0, 1, 1], scale=1)
    # The image size is accepted (and unused) by conventions that need none, so call sites stay uniform.
    assert bc.to_canonical("coco_xywh", [0, 0, 1, 1], width=10, height=10).tolist() == [0, 0, 1, 1]


def test_parameter_errors() -> None:
    with pytest.raises(BoxConventionError, match="scale must be a finite number > 0"):
        bc.qwen3_norm1000_to_canonical([0, 0, 1, 1], width=10, height=10, scale=0)
    with pytest.raises(BoxConventionError, match="one image at a time"):
        bc.qwen25_abs_resized_to_canonical([[0, 0, 1, 1]], width=[10], height=[10])
    with pytest.raises(BoxConventionError, match="resized must be"):
        bc.qwen25_abs_resized_to_canonical([0, 0, 1, 1], width=10, height=10, resized=(1, 2, 3))  # type: ignore
    with pytest.raises(BoxConventionError, match="resized height must be"):
        bc.qwen25_abs_resized_to_canonical([0, 0, 1, 1], width=10, height=10, resized=(10, 0))
    assert issubclass(BoxConventionError, VirlError)
