"""Every external box convention ↔ the canonical one. Nothing else in virl does coordinate arithmetic.

Canonical = absolute pixels ``x1, y1, x2, y2`` (float64) on the ORIGINAL image. Each convention is a pair
``<conv>_to_canonical(arr, ...)`` / ``canonical_to_<conv>(arr, ...)``, vectorised over a ``(4,)`` box or an
``(N, 4)`` array; the result is float64 with the input's rank. ``W, H`` below are the original image's width and
height (keyword-only ``width=`` / ``height=``: a number, or one value per box for boxes of different images).

=====================  =======================================  ==============================================
name                   external layout                          to canonical
=====================  =======================================  ==============================================
``coco_xywh``          ``[x, y, w, h]`` pixels                  ``[x, y, x + w, y + h]``
``fiftyone_rel_xywh``  ``[x, y, w, h]`` in 0–1 of ``W, H``      ``[x W, y H, (x + w) W, (y + h) H]``
``labelstudio_pct``    ``[x, y, width, height]`` in 0–100       ``[x W/100, y H/100, (x + width) W/100, ...]``
``rel_xyxy``           xyxy in 0–1 (LLaVA, Shikra)              ``[x1 W, y1 H, x2 W, y2 H]``
``qwen2_norm1000``     xyxy in 0–1000 (Qwen2-VL)                ``[x1 W/1000, y1 H/1000, ...]``
``qwen3_norm1000``     xyxy in 0–``scale`` (Qwen3-VL)           ``[x1 W/scale, y1 H/scale, ...]``
``qwen25_abs_resized`` xyxy pixels on the resized image         ``[x1 W/W_r, y1 H/H_r, x2 W/W_r, y2 H/H_r]``
                       ``W_r x H_r`` (Qwen2.5-VL, ``smart_resize``)
``padded_square_rel``  xyxy in 0–1 of the image padded to a     ``[x1 S - ox, y1 S - oy, x2 S - ox, y2 S - oy]``
                       square of side ``S = max(W, H)``         (``ox, oy`` = the paste offset, see below)
=====================  =======================================  ==============================================

``CONVENTIONS`` maps each name to its pair; ``to_canonical(name, arr, **params)`` / ``from_canonical(...)``
dispatch by name, and ``to_box`` / ``from_box`` do the same for one ``Box``. Values are converted as given:
nothing is clipped and out-of-image or inverted boxes pass through, so that the checks can name them
(clipping is ``boxes.clip``'s job). Malformed input (wrong shape, non-finite values, non-positive image sizes,
unknown convention or parameter) raises ``BoxConventionError``. Model-facing conventions return floats: round
them when formatting a prompt, not here, so that round trips stay exact. (The module exceeds the ~500-line guide
only through docstrings: each of the sixteen converters carries its formula and a checked example.)

Example:
    >>> coco_xywh_to_canonical([10, 20, 30, 40]).tolist()
    [10.0, 20.0, 40.0, 60.0]
    >>> to_canonical("rel_xyxy", [[0.1, 0.2, 0.5, 1.0]], width=200, height=100).tolist()
    [[20.0, 20.0, 100.0, 100.0]]
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from virl_data.core.errors import BoxConventionError
from virl_data.core.types import Box

ArrayLike = Any  # a (4,) or (N, 4) array-like of numbers, a Box, or a sequence of Box
Size = Any  # a positive number, or a (N,) array of them (one per box)

QWEN_FACTOR = 28  # patch_size 14 x merge_size 2
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 1280
QWEN_MAX_RATIO = 200


# --- validation ------------------------------------------------------------------------------------------------------
def _boxes(arr: ArrayLike, canonical: bool = False) -> tuple[np.ndarray, bool]:
    """``arr`` → a fresh float64 ``(N, 4)`` array and whether the input was a single ``(4,)`` box.

    ``Box`` objects are accepted only where canonical boxes are expected (``canonical=True``): a ``Box`` handed to a
    ``*_to_canonical`` function is a mix-up of conventions at the call site.
    """
    is_box = isinstance(arr, Box) or (isinstance(arr, (list, tuple)) and len(arr) > 0 and isinstance(arr[0], Box))
    if is_box and not canonical:
        raise BoxConventionError("Box objects are already canonical; pass the external values instead")
    if isinstance(arr, Box):
        arr = arr.as_tuple()
    elif is_box:
        arr = [b.as_tuple() for b in arr]
    try:
        a = np.array(arr, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise BoxConventionError(f"boxes must be numbers shaped (4,) or (N, 4): {e}") from None
    single = a.shape == (4,)
    if not single and not (a.ndim == 2 and a.shape[1] == 4):
        raise BoxConventionError(f"boxes must have shape (4,) or (N, 4), got shape {a.shape}")
    a = a.reshape(-1, 4)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise BoxConventionError(
            f"{int(bad.sum())} box(es) have non-finite values; the first is row {row}: {a[row].tolist()}"
        )
    return a, single


def _out(a: np.ndarray, single: bool) -> np.ndarray:
    """The converted boxes, which must be finite: finite input near float64's limit (``1e308``) can overflow."""
    if not np.isfinite(a).all():
        raise BoxConventionError("the converted box values overflow float64: the input values are too large")
    return a[0] if single else a


def _size(value: Size, name: str, n: int) -> np.ndarray:
    """An image size → float64, shape ``()`` or ``(n,)``; must be finite and > 0."""
    if value is None:
        raise BoxConventionError(f"the image {name} is required for this convention")
    try:
        s = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BoxConventionError(f"the image {name} must be a number, got {value!r}") from None
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != n):
        raise BoxConventionError(f"the image {name} must be a number or one value per box ({n}), got shape {s.shape}")
    bad = ~np.isfinite(s) | (s <= 0)
    if bad.any():
        shown = s.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
        raise BoxConventionError(f"the image {name} must be finite and > 0, got {float(shown)!r}")
    return s


def _positive(value: float, name: str) -> float:
    """A scalar parameter (scale, one image's size) → float; must be a finite number > 0."""
    try:
        v = math.nan if isinstance(value, (str, bytes, bool)) or np.ndim(value) else float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise BoxConventionError(f"{name} must be a finite number > 0, got {value!r}")
    return v


# --- shared kernels --------------------------------------------------------------------------------------------------
def _scale(a: np.ndarray, sx: Any, sy: Any) -> np.ndarray:
    """``[x1 sx, y1 sy, x2 sx, y2 sy]``."""
    return np.stack([a[:, 0] * sx, a[:, 1] * sy, a[:, 2] * sx, a[:, 3] * sy], axis=-1)


def _xywh_to_xyxy(a: np.ndarray) -> np.ndarray:
    return np.stack([a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]], axis=-1)


def _xyxy_to_xywh(a: np.ndarray) -> np.ndarray:
    return np.stack([a[:, 0], a[:, 1], a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]], axis=-1)


def _from_relative(arr: ArrayLike, width: Size, height: Size, unit: float, xywh: bool) -> np.ndarray:
    """Values in 0–``unit`` of the image size → canonical pixels."""
    a, single = _boxes(arr)
    w, h = _size(width, "width", len(a)), _size(height, "height", len(a))
    a = _xywh_to_xyxy(a) if xywh else a
    return _out(_scale(a, w / unit, h / unit), single)


def _to_relative(arr: ArrayLike, width: Size, height: Size, unit: float, xywh: bool) -> np.ndarray:
    """Canonical pixels → values in 0–``unit`` of the image size."""
    a, single = _boxes(arr, canonical=True)
    w, h = _size(width, "width", len(a)), _size(height, "height", len(a))
    a = _xyxy_to_xywh(a) if xywh else a
    return _out(_scale(a, unit / w, unit / h), single)


# --- COCO ------------------------------------------------------------------------------------------------------------
def coco_xywh_to_canonical(arr: ArrayLike) -> np.ndarray:
    """COCO ``[x, y, w, h]`` pixels → ``[x, y, x + w, y + h]``.

    >>> coco_xywh_to_canonical([[10, 20, 30, 40]]).tolist()
    [[10.0, 20.0, 40.0, 60.0]]
    """
    a, single = _boxes(arr)
    return _out(_xywh_to_xyxy(a), single)


def canonical_to_coco_xywh(arr: ArrayLike) -> np.ndarray:
    """Canonical → COCO ``[x1, y1, x2 - x1, y2 - y1]``.

    >>> canonical_to_coco_xywh([10, 20, 40, 60]).tolist()
    [10.0, 20.0, 30.0, 40.0]
    """
    a, single = _boxes(arr, canonical=True)
    return _out(_xyxy_to_xywh(a), single)


# --- FiftyOne --------------------------------------------------------------------------------------------------------
def fiftyone_rel_xywh_to_canonical(arr: ArrayLike, *, width: Size, height: Size) -> np.ndarray:
    """FiftyOne ``Detection.bounding_box`` ``[x, y, w, h]`` in 0–1 → ``[x W, y H, (x + w) W, (y + h) H]``.

    >>> fiftyone_rel_xywh_to_canonical([0.25, 0.5, 0.25, 0.25], width=200, height=100).tolist()
    [50.0, 50.0, 100.0, 75.0]
    """
    return _from_relative(arr, width, height, 1.0, xywh=True)


def canonical_to_fiftyone_rel_xywh(arr: ArrayLike, *, width: Size, height: Size) -> np.ndarray:
    """Canonical → FiftyOne ``[x1/W, y1/H, (x2 - x1)/W, (y2 - y1)/H]``.

    >>> canonical_to_fiftyone_rel_xywh([50, 50, 100, 75], width=200, height=100).tolist()
    [0.25, 0.5, 0.25, 0.25]
    """
    return _to_relative(arr, width, height, 1.0, xywh=True)


def canonical_to_fiftyone_rel_centers(arr: ArrayLike, *, width: Size, height: Size) -> np.ndarray:
    """Canonical boxes → their centres as FiftyOne relative points (``Polyline.points``), shape ``(2,)`` or
    ``(N, 2)``: ``[(x1 + x2) / (2 W), (y1 + y2) / (2 H)]``. One-way: a centre does not determine a box.

    >>> canonical_to_fiftyone_rel_centers([[50, 50, 100, 75], [0, 0, 200, 100]], width=200, height=100).tolist()
    [[0.375, 0.625], [0.5, 0.5]]
    """
    a, single = _boxes(arr, canonical=True)
    w, h = _size(width, "width", len(a)), _size(height, "height", len(a))
    centers = np.stack([(a[:, 0] + a[:, 2]) / (2 * w), (a[:, 1] + a[:, 3]) / (2 * h)], axis=-1)
    return centers[0] if single else centers


# --- Label Studio ----------------------------------------------------------------------------------------------------
def labelstudio_pct_to_canonical(arr: ArrayLike, *, width: Size, height: Size) -> np.ndarray:
    """Label Studio percent ``[x, y, width, height]`` → ``[x W, y H, (x + width) W, (y + height) H] / 100``.

    >>> labelstudio_pct_to_canonical([10, 20, 30, 40], width=200, height=100).tolist()
    [20.0, 20.0, 80.0, 60.0]
    """
    return _from_relative(arr, width, height, 100.0, xywh=True)


def canonical_to_labelstudio_pct(arr: ArrayLike, *, width: Size, height: Size) -> np.ndarray:
    """Canonical → Label Studio percent ``[100 x1/W, 100 y1/H, 100 (x2 - x1)/W, 100 (y2 - y1)/H]``.

    >>> canonical_to_labelstudio_pct([20, 20, 80, 60], width=200, height=100).tolist()
    [10.0, 20.0, 30.0, 40.0]
    """
    return _to_relative(arr, width, height, 100.0, xywh=True)


_LS_KEYS = ("x", "y", "width", "height")


def labelstudio_value_to_box(value: Mapping[str, Any], *, width: float, height: float) -> Box:
    """A Label Studio rectangle ``value`` dict (percent ``x, y, width, height``; ``rotation`` absent or 0) → ``Box``.

    A rotated rectangle has no axis-aligned equivalent, so a nonzero ``rotation`` is an error.

    >>> labelstudio_value_to_box({"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0}, width=200, height=100)
    Box(x1=20.0, y1=20.0, x2=80.0, y2=60.0)
    """
    missing = [k for k in _LS_KEYS if k not in value]
    if missing:
        raise BoxConventionError(f"Label Studio rectangle lacks {', '.join(missing)}: {dict(value)!r}")
    rotation = value.get("rotation") or 0
    if rotation != 0:
        raise BoxConventionError(f"Label Studio rectangle is rotated by {rotation} degrees; only 0 is supported")
    pct = [value[k] for k in _LS_KEYS]
    return Box(*labelstudio_pct_to_canonical(pct, width=width, height=height).tolist())


def box_to_labelstudio_value(box: Box, *, width: float, height: float) -> dict[str, float]:
    """A ``Box`` → the Label Studio rectangle ``value`` dict ``{"x", "y", "width", "height"}`` in percent.

    >>> box_to_labelstudio_value(Box(20, 20, 80, 60), width=200, height=100)
    {'x': 10.0, 'y': 20.0, 'width': 30.0, 'height': 40.0}
    """
    pct = canonical_to_labelstudio_pct(box, width=width, height=height).tolist()
    return dict(zip(_LS_KEYS, pct, strict=True))


# --- relative xyxy (LLaVA / Shikra) ----------------------------------------------------------------------------------
def rel_xyxy_to_canonical(arr: ArrayLike, *, width: Size, height: Size) -> np.ndarray:
    """Relative xyxy in 0–1 → ``[x1 W, y1 H, x2 W, y2 H]``.

    >>> rel_xyxy_to_canonical([0.1, 0.2, 0.5, 0.6], width=200, height=100).tolist()
    [20.0, 20.0, 100.0, 60.0]
    """
    return _from_relative(arr, width, height, 1.0, xywh=False)


def canonical_to_rel_xyxy(arr: ArrayLike, *, width: Size, height: Size) -> np.ndarray:
    """Canonical → relative xyxy ``[x1/W, y1/H, x2/W, y2/H]``.

    >>> canonical_to_rel_xyxy([20, 20, 100, 60], width=200, height=100).tolist()
    [0.1, 0.2, 0.5, 0.6]
    """
    return _to_relative(arr, width, height, 1.0, xywh=False)


# --- Qwen2-VL / Qwen3-VL: 0–1000 of the original image --------------------------------------------------------------
def qwen2_norm1000_to_canonical(arr: ArrayLike, *, width: Size, height: Size) -> np.ndarray:
    """Qwen2-VL xyxy in 0–1000 → ``[x1 W/1000, y1 H/1000, x2 W/1000, y2 H/1000]``.

    >>> qwen2_norm1000_to_canonical([100, 200, 500, 600], width=200, height=100).tolist()
    [20.0, 20.0, 100.0, 60.0]
    """
    return _from_relative(arr, width, height, 1000.0, xywh=False)


def canonical_to_qwen2_norm1000(arr: ArrayLike, *, width: Size, height: Size) -> np.ndarray:
    """Canonical → Qwen2-VL ``[1000 x1/W, 1000 y1/H, 1000 x2/W, 1000 y2/H]`` (floats; round when formatting).

    >>> canonical_to_qwen2_norm1000([20, 20, 100, 60], width=200, height=100).tolist()
    [100.0, 200.0, 500.0, 600.0]
    """
    return _to_relative(arr, width, height, 1000.0, xywh=False)


def qwen3_norm1000_to_canonical(arr: ArrayLike, *, width: Size, height: Size, scale: float = 1000) -> np.ndarray:
    """Qwen3-VL xyxy in 0–``scale`` → ``[x1 W/scale, y1 H/scale, x2 W/scale, y2 H/scale]``.

    ``scale`` is 1000 by default; some Qwen3-VL material maps the image edge to 999, so it is a parameter.

    >>> qwen3_norm1000_to_canonical([0, 0, 999, 999], width=200, height=100, scale=999).tolist()
    [0.0, 0.0, 200.0, 100.0]
    """
    return _from_relative(arr, width, height, _positive(scale, "scale"), xywh=False)


def canonical_to_qwen3_norm1000(arr: ArrayLike, *, width: Size, height: Size, scale: float = 1000) -> np.ndarray:
    """Canonical → Qwen3-VL ``[scale x1/W, scale y1/H, scale x2/W, scale y2/H]`` (floats; round when formatting).

    >>> canonical_to_qwen3_norm1000([20, 20, 100, 60], width=200, height=100).tolist()
    [100.0, 200.0, 500.0, 600.0]
    """
    return _to_relative(arr, width, height, _positive(scale, "scale"), xywh=False)


# --- Qwen2.5-VL: absolute pixels on the smart_resized image ----------------------------------------------------------
def smart_resize(
    height: float,
    width: float,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """The ``(height, width)`` the Qwen2-VL / Qwen2.5-VL image processor resizes an image to (note: height first).

    Both sides become multiples of ``factor`` with ``min_pixels <= h_r * w_r <= max_pixels``, aspect ratio kept:
    ``h_r = max(f, round(h/f) f)`` (``w_r`` likewise); if ``h_r w_r > max_pixels``: ``b = sqrt(h w / max_pixels)``,
    ``h_r = max(f, floor(h/b/f) f)``; elif ``h_r w_r < min_pixels``: ``b = sqrt(min_pixels / (h w))``,
    ``h_r = ceil(h b/f) f``. ``round`` is Python's (half to even), as in the reference. An aspect ratio over 200
    is an error. This follows ``qwen_vl_utils.smart_resize``; transformers' ``Qwen2VLImageProcessor`` gives the same
    except when a side is ≤ ``factor/2`` pixels (it rounds that side to 0, then takes the ``min_pixels`` branch).
    ``min_pixels`` / ``max_pixels`` must be the processor's own (``processor.image_processor.max_pixels``).

    >>> smart_resize(500, 1000)
    (504, 1008)
    >>> smart_resize(3000, 4000)
    (840, 1148)
    """
    h, w = _positive(height, "image height"), _positive(width, "image width")
    if not 0 < factor * factor <= max_pixels or min_pixels > max_pixels:
        raise BoxConventionError(
            f"smart_resize needs 0 < factor**2 <= max_pixels and min_pixels <= max_pixels; got factor={factor}, "
            f"min_pixels={min_pixels}, max_pixels={max_pixels}"
        )
    if max(h, w) / min(h, w) > QWEN_MAX_RATIO:
        raise BoxConventionError(f"aspect ratio must be at most {QWEN_MAX_RATIO}, got {max(h, w) / min(h, w):g}")
    h_bar = max(factor, round(h / factor) * factor)
    w_bar = max(factor, round(w / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        h_bar = max(factor, math.floor(h / beta / factor) * factor)
        w_bar = max(factor, math.floor(w / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        h_bar = math.ceil(h * beta / factor) * factor
        w_bar = math.ceil(w * beta / factor) * factor
    return int(h_bar), int(w_bar)


def _qwen25_scale(
    width: Size, height: Size, resized: tuple[float, float] | None, factor: int, min_pixels: int, max_pixels: int
) -> tuple[float, float]:
    """``(W / W_r, H / H_r)``: resized-image pixels → original pixels."""
    if np.ndim(width) or np.ndim(height):
        raise BoxConventionError("qwen25_abs_resized converts one image at a time: width and height must be numbers")
    w, h = _positive(width, "image width"), _positive(height, "image height")
    if resized is None:
        h_r, w_r = smart_resize(h, w, factor, min_pixels, max_pixels)
    else:
        if len(resized) != 2:
            raise BoxConventionError(f"resized must be (width, height), got {resized!r}")
        w_r, h_r = _positive(resized[0], "resized width"), _positive(resized[1], "resized height")
    return w / w_r, h / h_r


def qwen25_abs_resized_to_canonical(
    arr: ArrayLike,
    *,
    width: float,
    height: float,
    resized: tuple[float, float] | None = None,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> np.ndarray:
    """Qwen2.5-VL xyxy pixels on the resized ``W_r x H_r`` image → ``[x1 W/W_r, y1 H/H_r, x2 W/W_r, y2 H/H_r]``.

    ``resized=(W_r, H_r)`` when known (e.g. from ``image_grid_thw``), otherwise ``smart_resize(H, W, factor,
    min_pixels, max_pixels)`` computes it. A 1000 x 500 image is seen as 1008 x 504:

    >>> qwen25_abs_resized_to_canonical([100.8, 50.4, 302.4, 252.0], width=1000, height=500).round(9).tolist()
    [100.0, 50.0, 300.0, 250.0]
    """
    a, single = _boxes(arr)
    sx, sy = _qwen25_scale(width, height, resized, factor, min_pixels, max_pixels)
    return _out(_scale(a, sx, sy), single)


def canonical_to_qwen25_abs_resized(
    arr: ArrayLike,
    *,
    width: float,
    height: float,
    resized: tuple[float, float] | None = None,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> np.ndarray:
    """Canonical → Qwen2.5-VL resized-image pixels ``[x1 W_r/W, y1 H_r/H, x2 W_r/W, y2 H_r/H]`` (floats).

    >>> canonical_to_qwen25_abs_resized([10, 10, 20, 20], width=1000, height=500, resized=(500, 250)).tolist()
    [5.0, 5.0, 10.0, 10.0]
    """
    a, single = _boxes(arr, canonical=True)
    sx, sy = _qwen25_scale(width, height, resized, factor, min_pixels, max_pixels)
    return _out(_scale(a, 1.0 / sx, 1.0 / sy), single)


# --- VisCoT: relative to the image padded to a square ----------------------------------------------------------------
def _square(a: np.ndarray, width: Size, height: Size, centered: bool) -> tuple[Any, Any, Any]:
    """Side ``S = max(W, H)`` and paste offsets ``ox, oy`` (LLaVA's ``expand2square``: ``(S - W) // 2``)."""
    w, h = _size(width, "width", len(a)), _size(height, "height", len(a))
    side = np.maximum(w, h)
    if not centered:
        return side, 0.0, 0.0
    return side, np.floor((side - w) / 2), np.floor((side - h) / 2)


def _offsets(ox: Any, oy: Any) -> np.ndarray:
    """``[ox, oy, ox, oy]`` per box, ``(4,)`` or ``(N, 4)``."""
    return np.stack(np.broadcast_arrays(ox, oy, ox, oy), axis=-1)


def padded_square_rel_to_canonical(
    arr: ArrayLike, *, width: Size, height: Size, centered: bool = True
) -> np.ndarray:
    """VisCoT xyxy in 0–1 of the padded square → ``[x1 S - ox, y1 S - oy, x2 S - ox, y2 S - oy]``.

    ``S = max(W, H)``; with ``centered`` the image sits at ``ox = floor((S - W)/2)``, ``oy = floor((S - H)/2)``
    (as LLaVA's ``expand2square`` pastes it), otherwise at ``(0, 0)`` (padding at the bottom/right).

    >>> padded_square_rel_to_canonical([0.1, 0.35, 0.5, 0.75], width=200, height=100).tolist()
    [20.0, 20.0, 100.0, 100.0]
    """
    a, single = _boxes(arr)
    side, ox, oy = _square(a, width, height, centered)
    return _out(_scale(a, side, side) - _offsets(ox, oy), single)


def canonical_to_padded_square_rel(
    arr: ArrayLike, *, width: Size, height: Size, centered: bool = True
) -> np.ndarray:
    """Canonical → VisCoT ``[(x1 + ox)/S, (y1 + oy)/S, (x2 + ox)/S, (y2 + oy)/S]``.

    >>> canonical_to_padded_square_rel([20, 20, 100, 100], width=200, height=100, centered=False).tolist()
    [0.1, 0.1, 0.5, 0.5]
    """
    a, single = _boxes(arr, canonical=True)
    side, ox, oy = _square(a, width, height, centered)
    shifted = a + _offsets(ox, oy)
    return _out(_scale(shifted, 1.0 / side, 1.0 / side), single)


# --- registry and dispatch -------------------------------------------------------------------------------------------
Converter = Callable[..., np.ndarray]

CONVENTIONS: dict[str, tuple[Converter, Converter]] = {
    "coco_xywh": (coco_xywh_to_canonical, canonical_to_coco_xywh),
    "fiftyone_rel_xywh": (fiftyone_rel_xywh_to_canonical, canonical_to_fiftyone_rel_xywh),
    "labelstudio_pct": (labelstudio_pct_to_canonical, canonical_to_labelstudio_pct),
    "rel_xyxy": (rel_xyxy_to_canonical, canonical_to_rel_xyxy),
    "qwen2_norm1000": (qwen2_norm1000_to_canonical, canonical_to_qwen2_norm1000),
    "qwen3_norm1000": (qwen3_norm1000_to_canonical, canonical_to_qwen3_norm1000),
    "qwen25_abs_resized": (qwen25_abs_resized_to_canonical, canonical_to_qwen25_abs_resized),
    "padded_square_rel": (padded_square_rel_to_canonical, canonical_to_padded_square_rel),
}
"""Convention name → ``(to_canonical, from_canonical)``."""

_SIZE_KEYS = frozenset({"width", "height"})


@functools.cache
def _params(fn: Converter) -> tuple[frozenset[str], tuple[str, ...]]:
    """A converter's keyword parameters: all of them, and the required ones."""
    ps = [p for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return frozenset(p.name for p in ps), tuple(p.name for p in ps if p.default is inspect.Parameter.empty)


def _dispatch(name: str, direction: int, arr: ArrayLike, params: dict[str, Any]) -> np.ndarray:
    if name not in CONVENTIONS:
        raise BoxConventionError(f"unknown box convention {name!r}; known: {', '.join(CONVENTIONS)}")
    fn = CONVENTIONS[name][direction]
    accepted, required = _params(fn)
    # width/height are always accepted, so a call site can pass the image size whatever the convention.
    unknown = sorted(set(params) - accepted - _SIZE_KEYS)
    if unknown:
        takes = ", ".join(sorted(accepted)) or "no parameters"
        raise BoxConventionError(f"box convention {name!r} takes {takes}; got unexpected {', '.join(unknown)}")
    missing = [k for k in required if params.get(k) is None]
    if missing:
        raise BoxConventionError(f"box convention {name!r} needs {' and '.join(missing)} of the original image")
    return fn(arr, **{k: v for k, v in params.items() if k in accepted})


def to_canonical(name: str, arr: ArrayLike, **params: Any) -> np.ndarray:
    """Boxes in convention ``name`` → canonical; ``params`` are that convention's (``width``, ``height``, ...).

    >>> to_canonical("coco_xywh", [10, 20, 30, 40], width=640, height=480).tolist()
    [10.0, 20.0, 40.0, 60.0]
    """
    return _dispatch(name, 0, arr, params)


def from_canonical(name: str, arr: ArrayLike, **params: Any) -> np.ndarray:
    """Canonical boxes → convention ``name``.

    >>> from_canonical("qwen2_norm1000", [20, 20, 100, 60], width=200, height=100).tolist()
    [100.0, 200.0, 500.0, 600.0]
    """
    return _dispatch(name, 1, arr, params)


def to_box(name: str, values: ArrayLike, **params: Any) -> Box:
    """One box's 4 values in convention ``name`` → a canonical ``Box``.

    >>> to_box("rel_xyxy", (0.5, 0.5, 1.0, 1.0), width=64, height=32)
    Box(x1=32.0, y1=16.0, x2=64.0, y2=32.0)
    """
    try:
        shape = np.shape(values)
    except ValueError:  # ragged, e.g. [x, y, w, [h]]
        raise BoxConventionError(f"to_box converts one box of 4 numbers, got {values!r}") from None
    if shape != (4,):
        raise BoxConventionError(f"to_box converts one box of 4 values, got shape {shape}")
    return Box(*to_canonical(name, values, **params).tolist())


def from_box(name: str, box: Box, **params: Any) -> tuple[float, float, float, float]:
    """A canonical ``Box`` → its 4 values in convention ``name``.

    >>> from_box("coco_xywh", Box(10, 20, 40, 60))
    (10.0, 20.0, 30.0, 40.0)
    """
    if not isinstance(box, Box):
        raise BoxConventionError(f"from_box takes a Box, got {type(box).__name__}")
    return tuple(from_canonical(name, box, **params).tolist())  # type: ignore[return-value]


__all__ = [
    "CONVENTIONS",
    "box_to_labelstudio_value",
    "canonical_to_coco_xywh",
    "canonical_to_fiftyone_rel_centers",
    "canonical_to_fiftyone_rel_xywh",
    "canonical_to_labelstudio_pct",
    "canonical_to_padded_square_rel",
    "canonical_to_qwen25_abs_resized",
    "canonical_to_qwen2_norm1000",
    "canonical_to_qwen3_norm1000",
    "canonical_to_rel_xyxy",
    "coco_xywh_to_canonical",
    "fiftyone_rel_xywh_to_canonical",
    "from_box",
    "from_canonical",
    "labelstudio_pct_to_canonical",
    "labelstudio_value_to_box",
    "padded_square_rel_to_canonical",
    "qwen25_abs_resized_to_canonical",
    "qwen2_norm1000_to_canonical",
    "qwen3_norm1000_to_canonical",
    "rel_xyxy_to_canonical",
    "smart_resize",
    "to_box",
    "to_canonical",
]
